"""Lower the hub ONNX graph to a MIL program, one registered converter per node."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from bridge.base.bindings import Pixels
from bridge.base.errors import ConversionError, one_line
from bridge.base.lazy import require
from bridge.converters.coreml.context import Context
from bridge.converters.coreml.images import image_type
from bridge.converters.coreml.registry import lookup

# ONNX elem type -> (numpy dtype, MIL input dtype name). Core ML has no int64 or float64 tensors
# at its interface: token ids arrive as int32 and doubles as float32 (the report says so).
INPUT_TYPES = {1: ("float32", "fp32"), 10: ("float16", "fp16"), 6: ("int32", "int32"), 7: ("int64", "int32"),
               9: ("bool", "bool"), 11: ("float64", "fp32")}


@dataclass
class Built:
    program: object
    inputs: dict[str, str]  # ONNX input name -> Core ML feature name
    outputs: dict[str, str]  # ONNX output name -> Core ML feature name
    dtypes: dict[str, str]  # Core ML feature name -> dtype at the interface
    layers: dict[str, tuple[str, ...]] = field(default_factory=dict)  # hub node name -> the MIL ops it made


def feature_name(name: str) -> str:
    """coremltools turns feature names into identifiers; we choose the same name up front."""
    s = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return s if re.match(r"[A-Za-z_]", s) else f"_{s}"


def build_program(model, target, *, node_names: dict[str, str] | None = None,
                  after_op: Callable | None = None, defaults: dict[str, tuple[int, ...]] | None = None,
                  images: dict[str, Pixels] | None = None, channel_last: bool = False) -> Built:
    """`after_op(ctx, node)` runs after each node is lowered (activation quantization hooks here).
    `defaults` gives each input's default sizes: dynamic axes become ranges from 1 to
    `dynamic_upper_bound(default)` (left alone, coremltools would bound them at 2). `images` names
    the inputs that become ImageTypes taking pixels (`channel_last`: their layout in the graph)."""
    require("coremltools")
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import Function, Program, types
    from onnx import numpy_helper

    from bridge.converters.onnx.hub import opset_of

    graph = model.graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    placeholders, inputs, dtypes = {}, {}, {}
    for vi in graph.input:
        if vi.name in constants:
            continue
        t = vi.type.tensor_type
        if t.elem_type not in INPUT_TYPES:
            raise ConversionError(f"input {vi.name} has a type Core ML cannot take", stage="coreml-convert")
        shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else _symbol() for d in t.shape.dim]
        shape = shape or [1]  # Core ML has no scalar inputs: a scalar arrives as shape (1,), squeezed inside
        mil_type = getattr(types, INPUT_TYPES[t.elem_type][1])
        fname = feature_name(vi.name)
        placeholders[fname] = mb.placeholder(shape=shape, dtype=mil_type)
        inputs[vi.name] = fname
        dtypes[fname] = INPUT_TYPES[t.elem_type][1]
    ctx = Context(opset_of(model), constants, node_names)
    scalars = {vi.name for vi in graph.input if vi.name in inputs and not vi.type.tensor_type.shape.dim}
    layers: dict[str, tuple[str, ...]] = {}
    with Function(placeholders, opset_version=target) as func:
        for onnx_name, fname in inputs.items():
            value = func.inputs[fname]
            ctx.set(onnx_name, mb.squeeze(x=value) if onnx_name in scalars else value)
        for node in graph.node:
            if node.op_type == "Constant":
                ctx.set(node.output[0], _constant(node))
                continue
            convert = lookup(node.op_type, ctx.opset)
            first = len(func.operations)
            if convert is None:
                raise ctx.unsupported(node, "no Core ML converter")
            try:
                convert(ctx, node)
            except ConversionError:
                raise
            except Exception as e:  # MIL's type and shape checks raise ValueError/TypeError/AssertionError
                raise ctx.unsupported(node, one_line(e, pick="first", with_type=True, limit=300)) from None
            if after_op is not None:
                after_op(ctx, node)
            layers[node.name] = _newest(func.operations, len(func.operations) - first)
        outputs, out_vars = {}, []
        for vi in graph.output:
            fname = feature_name(vi.name)
            value = ctx.value(vi.name)
            if isinstance(value, np.ndarray) or getattr(value, "name", None) != fname:
                value = mb.identity(x=value, name=fname)
            outputs[vi.name] = fname
            out_vars.append(value)
            dtypes[fname] = types.builtin_to_string(value.dtype)
        func.set_outputs(out_vars)
    images = images or {}
    func.input_types = [_input_type(fname, placeholders[fname], (defaults or {}).get(onnx_name),
                                    images.get(onnx_name), channel_last)
                        for onnx_name, fname in inputs.items()]
    prog = Program()
    prog.add_function("main", func)
    return Built(prog, inputs, outputs, dtypes, layers)


def _newest(operations, count: int) -> tuple[str, ...]:
    """The names of the last `count` ops, in program order (MIL's op list is a linked list: it
    walks from either end, but indexes only its first and last)."""
    names = []
    for op in reversed(operations):
        if len(names) == count:
            break
        names.append(op.name)
    return tuple(reversed(names))


def dynamic_upper_bound(default: int) -> int:
    """ML Programs need a finite range for each dynamic axis: 16x the default size, at least 1024."""
    return max(16 * default, 1024)


def _input_type(fname: str, placeholder, default: tuple[int, ...] | None, pixels: Pixels | None,
                channel_last: bool):
    import coremltools as ct
    from coremltools.converters.mil.mil.types.symbolic import is_symbolic

    shape = []
    for i, d in enumerate(placeholder.sym_shape):
        if is_symbolic(d):
            size = default[i] if default and i < len(default) else 1
            shape.append(ct.RangeDim(lower_bound=1, upper_bound=dynamic_upper_bound(size), default=size))
        else:
            shape.append(int(d))
    if pixels is not None:
        return image_type(fname, ct.Shape(shape), pixels, channel_first=not channel_last)
    return ct.TensorType(name=fname, shape=ct.Shape(shape), dtype=placeholder.dtype)


def _symbol():
    from coremltools.converters.mil.mil import get_new_symbol

    return get_new_symbol()


def _constant(node) -> np.ndarray:
    from onnx import numpy_helper

    for a in node.attribute:
        if a.name == "value":
            return numpy_helper.to_array(a.t)
        if a.name in ("value_float", "value_int"):
            return np.asarray(a.f if a.name == "value_float" else a.i,
                              dtype=np.float32 if a.name == "value_float" else np.int64)
        if a.name in ("value_floats", "value_ints"):
            return np.asarray(list(a.floats) if a.name == "value_floats" else list(a.ints),
                              dtype=np.float32 if a.name == "value_floats" else np.int64)
    raise ConversionError(f"Constant node {node.name} has no value Core ML can read", stage="coreml-convert")
