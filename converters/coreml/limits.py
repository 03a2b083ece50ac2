"""What each op converter claims, attribute by attribute.

A converter registered for an op type may lower only some of its attribute combinations exactly
(an interpolation mode MIL has no sampler for, an output Core ML cannot produce). For those op
types one small function here says why a node is refused, from its attributes and, where they are
known before converting, its constant inputs and input ranks; the preflight calls it for every
node, so `bridge inspect` and the lane name each refused combination before anything converts.
The converters keep their own checks for what only conversion reveals (run-time shapes).

    @limit("LRN")
    def lrn(f: NodeFacts) -> str | None:
        return "size=even (Core ML centres even windows differently)" if f.attr("size") % 2 == 0 else None
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property

import numpy as np

from bridge.base.inference import infer

_LIMITS: dict[str, Callable[[NodeFacts], str | None]] = {}


def limit(*op_types: str) -> Callable:
    def wrap(fn: Callable) -> Callable:
        for op_type in op_types:
            if op_type in _LIMITS:
                raise ValueError(f"Core ML limit for {op_type} registered twice")
            _LIMITS[op_type] = fn
        return fn

    return wrap


def limit_of(op_type: str) -> Callable[[NodeFacts], str | None] | None:
    return _LIMITS.get(op_type)


class NodeFacts:
    """One node as the preflight sees it: attributes, and what the graph tells before converting."""

    def __init__(self, node, opset: int, constants: dict | None = None, ranks: dict[str, int] | None = None):
        self.node, self.opset = node, opset
        self._constants, self._ranks = constants or {}, ranks or {}

    @cached_property
    def attrs(self) -> dict:
        from bridge.converters.coreml.context import attrs

        return attrs(self.node)

    def attr(self, name: str, default=None):
        return self.attrs.get(name, default)

    def has_input(self, i: int) -> bool:
        return len(self.node.input) > i and bool(self.node.input[i])

    def has_output(self, i: int) -> bool:
        return len(self.node.output) > i and bool(self.node.output[i])

    def value(self, i: int) -> np.ndarray | None:
        """Input i's value when it is an initializer or a Constant's output (and its data is loaded)."""
        if not self.has_input(i):
            return None
        v = self._constants.get(self.node.input[i])
        return v() if callable(v) else v

    def rank(self, i: int) -> int | None:
        return self._ranks.get(self.node.input[i]) if self.has_input(i) else None

    def output_rank(self, i: int) -> int | None:
        return self._ranks.get(self.node.output[i]) if self.has_output(i) else None

    def folds(self) -> bool:
        """Every input is a constant, so the converter computes the node in numpy."""
        return all(name in self._constants for name in self.node.input if name)


MAX_RANK = 5  # Core ML tensors have rank 5 at most


def general_limit(f: NodeFacts) -> str | None:
    """What no converter can produce, whatever the op: a tensor of rank above 5."""
    if f.folds():
        return None
    for i in range(len(f.node.output)):
        rank = f.output_rank(i)
        if rank is not None and rank > MAX_RANK:
            return f"a rank-{rank} output (Core ML tensors have rank {MAX_RANK} at most)"
    return None


def input_limit(value_info) -> str | None:
    """Why a graph input cannot be a Core ML input, or None."""
    from bridge.converters.coreml.build import INPUT_TYPES

    t = value_info.type.tensor_type
    if value_info.type.WhichOneof("value") != "tensor_type" or t.elem_type not in INPUT_TYPES:
        return "an input type Core ML cannot take (float32, float16, float64, int32, int64 or bool)"
    if t.HasField("shape") and len(t.shape.dim) > MAX_RANK:  # a scalar goes in as shape (1,)
        return f"a rank-{len(t.shape.dim)} input (Core ML inputs have rank {MAX_RANK} at most)"
    return None


def graph_facts(model, opset: int) -> Callable[[object], NodeFacts]:
    """A NodeFacts factory sharing the model's constants and inferred ranks."""
    constants = {t.name: _lazy_tensor(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    constants[node.output[0]] = _lazy_tensor(a.t)
    ranks = _ranks(model)
    return lambda node: NodeFacts(node, opset, constants, ranks)


def _lazy_tensor(proto) -> Callable[[], np.ndarray | None]:
    def read():
        from onnx import numpy_helper

        if proto.data_location == proto.EXTERNAL:
            return None
        return numpy_helper.to_array(proto)

    return read


def _ranks(model) -> dict[str, int]:
    import onnx

    try:
        inferred = infer(model, strict_mode=False)
    except (onnx.shape_inference.InferenceError, ValueError):
        inferred = model
    g = inferred.graph
    out = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        t = vi.type.tensor_type
        if t.HasField("shape"):
            out[vi.name] = len(t.shape.dim)
    for t in g.initializer:
        out[t.name] = len(t.dims)
    return out


# --------------------------------------------------------------------------------------------------


# pooling -----------------------------------------------------------------------------------------
@limit("MaxPool", "AveragePool")
def pool(f: NodeFacts) -> str | None:
    from bridge.converters.coreml.ops.pool import MAX_WINDOW, SAME_DILATED

    kernel = f.attr("kernel_shape") or []
    dilated = any(d != 1 for d in f.attr("dilations") or [])
    if dilated and f.attr("auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER"):
        return SAME_DILATED
    if (dilated or f.has_output(1)) and int(np.prod(kernel)) > MAX_WINDOW:
        return f"kernel_shape of over {MAX_WINDOW} elements with dilations or Indices (unrolled window by window)"
    return None


# resizing ----------------------------------------------------------------------------------------
@limit("Resize", "Upsample")
def resize(f: NodeFacts) -> str | None:
    from bridge.converters.coreml.ops.resize import ANTIALIASED_CROP

    mode = f.attr("mode", "nearest")
    if mode not in ("nearest", "linear", "bilinear", "cubic"):
        return f"mode={mode}"
    if f.rank(0) not in (None, 4):
        return f"a rank-{f.rank(0)} input (only 4-D NCHW resizes are lowered)"
    cropped = f.attr("coordinate_transformation_mode") == "tf_crop_and_resize"
    if cropped and f.attr("antialias", 0) and mode != "nearest":
        return ANTIALIASED_CROP
    scales = f.value(2) if f.node.op_type == "Resize" and f.opset >= 11 else f.value(1)
    if scales is not None and scales.size and f.attr("axes") is None and list(scales.reshape(-1)[:2]) != [1, 1]:
        return "scales over the batch or channel dims (only H and W are resized)"
    return None


# recurrent ---------------------------------------------------------------------------------------
@limit("LSTM", "GRU", "RNN")
def recurrent(f: NodeFacts) -> str | None:
    from bridge.converters.coreml.ops.recurrent import refusal

    return refusal(f.attrs)


# normalization -----------------------------------------------------------------------------------
@limit("LRN")
def lrn(f: NodeFacts) -> str | None:
    size = f.attr("size")
    if size is not None and size % 2 == 0:
        return f"size={size} (even sizes centre the window differently in Core ML)"
    if f.rank(0) is not None and not 3 <= f.rank(0) <= 5:
        return f"a rank-{f.rank(0)} input (Core ML's local_response_norm takes rank 3 to 5)"
    return None


# tensors -----------------------------------------------------------------------------------------
@limit("Pad")
def pad(f: NodeFacts) -> str | None:
    mode = f.attr("mode", "constant")
    return None if mode in ("constant", "reflect", "edge", "wrap") else f"mode={mode}"


@limit("Cast")
def cast(f: NodeFacts) -> str | None:
    """Folded casts (shape arithmetic) take any type; a cast at run time only Core ML's."""
    from onnx import helper

    from bridge.converters.coreml.ops.arithmetic import MIL_DTYPE

    to = f.attr("to")
    try:
        supported = np.dtype(helper.tensor_dtype_to_np_dtype(to)) in MIL_DTYPE
    except (KeyError, TypeError):
        supported = False
    return None if supported or f.folds() else f"to={helper.tensor_dtype_to_string(to) if to else to}"


@limit("Dropout")
def dropout(f: NodeFacts) -> str | None:
    training = f.value(2)
    return "training_mode=True (random)" if training is not None and bool(training) else None
