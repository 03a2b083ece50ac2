"""Turn any ONNX graph into the hub graph every lane reads: current opset, simplified, pruned,
with names TensorFlow accepts, checked."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

from bridge.base.errors import ConversionError, one_line
from bridge.base.inference import size_bound
from bridge.base.lazy import require
from bridge.base.onnx_files import PROTOBUF_LIMIT
from bridge.base.tensors import TensorSpec
from bridge.converters.onnx.artifact import data_file
from bridge.converters.onnx.passes import apply_passes
from bridge.converters.onnx.shapes import Folding, fold

MIN_OPSET = 13  # below this, Split/Squeeze/Reduce* take attributes the lanes do not all handle
UPGRADE_TO = 17
EXTERNAL_DATA_BYTES = PROTOBUF_LIMIT - (64 << 20)  # protobuf serializes no message past 2 GB; room for the graph
_SAFE = re.compile(r"[^A-Za-z0-9_./-]")


def opset_of(model) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return 0


def upgrade(model):
    """Old opsets (7 and up) are upgraded so every lane sees one vocabulary."""
    onnx = require("onnx")
    opset = opset_of(model)
    if opset >= MIN_OPSET:
        return model
    from onnx import version_converter

    try:
        upgraded = version_converter.convert_version(model, UPGRADE_TO)
    except Exception as e:  # onnx raises bare RuntimeError/ValueError for unconvertible nodes
        raise ConversionError(f"cannot upgrade opset {opset} to {UPGRADE_TO}: {e}", stage="onnx-upgrade") from None
    # The converter bumps the IR version only as far as it must; old files carry IR 3, where
    # initializers are also graph inputs.
    upgraded.ir_version = max(upgraded.ir_version, onnx.IR_VERSION_2021_7_30)
    return upgraded


def simplify(model):
    onnxslim = require("onnxslim")
    try:
        try:
            return onnxslim.slim(model)
        except IndexError:
            # onnxslim 0.1.98 writes the declared output dims back by position and fails when its
            # inference gave an output another rank (Resize with `axes`): again without them; the
            # outputs' shapes come back from onnx's inference (`shapes.reinfer`)
            bare = require("onnx").ModelProto()
            bare.CopyFrom(model)
            for out in bare.graph.output:
                out.type.tensor_type.ClearField("shape")
            return onnxslim.slim(bare)
    except Exception as e:  # onnxslim raises whatever its passes raise
        raise ConversionError(f"onnxslim failed: {e}", stage="onnx-simplify") from None


def prune_inputs(model) -> list[str]:
    """Drop graph inputs nothing reads (Keras exports keep Normalization statistics as inputs)
    and inputs that are really initializers (IR < 4 files list weights as inputs)."""
    graph = model.graph
    used = {name for node in graph.node for name in node.input}
    used |= {o.name for o in graph.output}
    _subgraph_inputs(graph, used)
    inits = {t.name for t in graph.initializer}
    keep, dropped = [], []
    for inp in graph.input:
        (keep if inp.name in used and inp.name not in inits else dropped).append(inp)
    if dropped:
        del graph.input[:]
        graph.input.extend(keep)
    return [i.name for i in dropped if i.name not in inits]


def _subgraph_inputs(graph, used: set[str]) -> None:
    for node in graph.node:
        for attr in node.attribute:
            for g in [attr.g] if attr.HasField("g") else list(attr.graphs):
                used.update(name for n in g.node for name in n.input)
                _subgraph_inputs(g, used)


def sanitize_names(model) -> dict[str, str]:
    """Rename nodes and internal tensors to TensorFlow-safe names; graph inputs and outputs keep
    theirs. Returns new node name -> original, for error messages."""
    graph = model.graph
    io = {v.name for v in graph.input} | {v.name for v in graph.output}
    taken: set[str] = set(io) | {t.name for t in graph.initializer}
    rename: dict[str, str] = {}

    def fresh(base: str) -> str:
        name, i = base, 1
        while name in taken:
            name, i = f"{base}_{i}", i + 1
        taken.add(name)
        return name

    for node in graph.node:
        for out in node.output:
            if out and out not in io and _SAFE.search(out):
                rename[out] = fresh(_SAFE.sub("_", out))
    for t in graph.initializer:
        if _SAFE.search(t.name):
            taken.discard(t.name)
            rename[t.name] = fresh(_SAFE.sub("_", t.name))
            t.name = rename[t.name]
    for vi in graph.value_info:
        vi.name = rename.get(vi.name, vi.name)
    originals: dict[str, str] = {}
    node_names: set[str] = set()
    for i, node in enumerate(graph.node):
        _rename_captures(node, rename)
        node.input[:] = [rename.get(n, n) for n in node.input]
        node.output[:] = [rename.get(n, n) for n in node.output]
        original = node.name
        name = _SAFE.sub("_", original) or f"{node.op_type}_{i}"
        while name in node_names:
            name = f"{name}_{i}"
        node_names.add(name)
        node.name = name
        if name != original:
            originals[name] = original or f"(unnamed {node.op_type} #{i})"
    return originals


def _rename_captures(node, rename: dict[str, str]) -> None:
    """Loop/If/Scan bodies read outer tensors by name: follow the renames into them."""
    for attr in node.attribute:
        for g in [attr.g] if attr.HasField("g") else list(attr.graphs):
            for inner in g.node:
                _rename_captures(inner, rename)
                inner.input[:] = [rename.get(n, n) for n in inner.input]


def param_count(model) -> int:
    """Weights in the graph (initializers and constant tensors with more than one element)."""
    total = 0
    for t in model.graph.initializer:
        n = 1
        for d in t.dims:
            n *= d
        if n > 1:
            total += n
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and len(a.t.dims) and a.t.data_type in (1, 10, 11):
                    n = 1
                    for d in a.t.dims:
                        n *= d
                    total += n
    return total


_FLOAT_BYTES = {1: 4, 11: 8}  # FLOAT, DOUBLE: what the activation-ranges probe reads


def activation_bytes(model) -> int | None:
    """The bytes of every float tensor the main graph computes on one sample, from the static
    shapes the finished hub records (its value_info): what the activation-ranges probe, which reads
    them all as outputs, holds at once. None when a tensor's type or shape is not recorded (a
    dynamic axis): the orchestrator then estimates from the file's size alone."""
    infos = {vi.name: vi.type.tensor_type for vi in [*model.graph.value_info, *model.graph.output]}
    total = 0
    for node in model.graph.node:
        for name in filter(None, node.output):
            t = infos.get(name)
            if t is None:
                return None
            if t.elem_type not in _FLOAT_BYTES:
                continue
            dims = [d.dim_value if d.HasField("dim_value") else 0 for d in t.shape.dim]
            if not t.HasField("shape") or any(d <= 0 for d in dims):
                return None
            total += math.prod(dims) * _FLOAT_BYTES[t.elem_type]
    return total


def finalize(model, out_path: str | Path, external_bytes: int | None = None, inputs: Sequence[TensorSpec] = (),
             ) -> tuple[object, dict[str, str], list[str], Folding]:
    """Upgrade, fix the input shapes and fold (`shapes.fold`, with onnxslim), run the hub passes,
    prune, sanitize, check and save. Returns the model, the node-name map, warnings and what was
    folded."""
    onnx = require("onnx")
    warnings = []
    before = opset_of(model)
    model = upgrade(model)
    if opset_of(model) != before:
        warnings.append(f"ONNX opset {before} upgraded to {opset_of(model)}")
    model, folding = fold(model, inputs, simplify)
    if folding.symbolic.startswith("failed"):
        warnings.append(f"onnxruntime's symbolic shape inference {folding.symbolic}; dims were folded by onnx's "
                        "own inference only")
    applied = apply_passes(model)
    if applied:
        warnings.append(f"hub passes: {', '.join(applied)}")
    dropped = prune_inputs(model)
    if dropped:
        warnings.append(f"unused graph inputs removed: {', '.join(dropped)}")
    names = sanitize_names(model)
    external = size_bound(model) > (EXTERNAL_DATA_BYTES if external_bytes is None else external_bytes)
    if external:  # protobuf cannot hold it: weights go beside it first, the checker reads the path
        save(model, out_path, external=True)
    try:
        onnx.checker.check_model(str(out_path) if external else model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:  # full_check infers too
        raise ConversionError(f"the hub ONNX graph is invalid: {one_line(e, pick='first')}",
                              stage="onnx-check") from None
    if external:
        warnings.append(f"hub weights saved as external data in {data_file(out_path).name}")
    else:
        save(model, out_path, external=False)
    return model, names, warnings, folding


def save(model, path: str | Path, *, external: bool) -> None:
    """Write the hub; with `external`, every tensor of 1 KiB or more goes to `data_file(path)`
    (replaced, never appended to: onnx appends to an existing data file)."""
    onnx = require("onnx")
    data = data_file(path)
    data.unlink(missing_ok=True)
    if not external:
        onnx.save(model, str(path))
        return
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data.name,
              size_threshold=1024, convert_attribute=True)
