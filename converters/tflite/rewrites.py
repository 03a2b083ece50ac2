"""ONNX rewrites the TFLite lane runs on the hub graph before onnx2tf, for what onnx2tf lowers wrongly.

onnx2tf can be wrong without failing, so every pass here re-expresses one pattern with ops it lowers
correctly and ships with a fixture (tests/converters/tflite/test_rewrites.py) showing onnx2tf's
TFLite missing onnxruntime on the original graph and matching it on the rewritten one. Measured
with onnx2tf 1.29.24: when an upgrade fixes a pattern, its `test_onnx2tf_still_gets_it_wrong` case
fails and the pass can go. Pooling forms onnx2tf already gets right (explicit pads,
count_include_pad 0 or 1, ceil_mode, SAME_UPPER on MaxPool) are left alone.

Not here on purpose: AveragePool with ceil_mode=1 and count_include_pad=1. onnx2tf follows the ONNX
spec and PyTorch there (the overhanging last window divides by its in-bounds size); onnxruntime's
kernel before opset 19 divides by the full kernel, so it is the reference that is off.

Passes keep what onnxruntime computes, touch only top-level nodes whose spatial input shape is
static, and edit the model in place.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from bridge.lazy import require

if TYPE_CHECKING:
    import onnx

Pass = Callable[["onnx.ModelProto"], int]

_PASSES: dict[str, Pass] = {}

PIPELINE: tuple[str, ...] = (
    "explicit-auto-pad",  # first: it turns SAME_UPPER LpPools into the padded form the next pass handles
    "lppool-explicit-pad",
    "maxpool-dilations",
)


def rewrite(name: str) -> Callable[[Pass], Pass]:
    """Register a pass under `name`; a pass returns how many nodes it rewrote."""

    def register(fn: Pass) -> Pass:
        if name in _PASSES:
            raise ValueError(f"rewrite pass {name!r} is already registered")
        _PASSES[name] = fn
        return fn

    return register


def apply_rewrites(model: onnx.ModelProto, passes: Iterable[str] = PIPELINE) -> list[str]:
    """Run `passes` in order on `model` in place; returns e.g. `["maxpool-dilations x2"]` for the
    passes that changed something, for the artifact's warnings."""
    unknown = [p for p in passes if p not in _PASSES]
    if unknown:
        raise ValueError(f"unknown rewrite passes: {', '.join(unknown)}")
    applied = []
    for name in passes:
        count = _PASSES[name](model)
        if count:
            applied.append(f"{name} x{count}")
    return applied


# --- passes -----------------------------------------------------------------------------------------


@rewrite("explicit-auto-pad")
def explicit_auto_pad(model: onnx.ModelProto) -> int:
    """Spell SAME_* auto_pad out as explicit pads where onnx2tf mishandles the auto_pad form.

    Explicit pads take onnx2tf's well-tested path. The auto_pad forms it gets wrong: SAME_LOWER with
    uneven padding on pools (output one row/column too big, and shifted), SAME_LOWER on Conv
    (refused), SAME_UPPER on AveragePool with count_include_pad=1 (padding left out of the average,
    rel. L2 0.33-0.40) and on LpPool (borders scaled wrongly).
    """
    candidates = [n for n in model.graph.node if _auto_pad(n) in ("SAME_UPPER", "SAME_LOWER")
                  and n.op_type in ("Conv", "MaxPool", "AveragePool", "LpPool")]
    if not candidates:
        return 0
    shapes = _static_spatial_shapes(model)
    count = 0
    for node in candidates:
        window = _window(node, shapes)
        pads = _same_pads(window, lower=_auto_pad(node) == "SAME_LOWER") if window else None
        if pads is None or _attr(node, "ceil_mode", 0) or any(d > 1 for d in window.dilations):
            continue  # onnxruntime sizes these its own way (dilations left out): no one meaning to keep
        begin, end = pads
        if not _auto_pad_mislowered(node, begin, end):
            continue
        _del_attr(node, "auto_pad")
        _set_attr(node, "pads", [*begin, *end])
        count += 1
    return count


@rewrite("lppool-explicit-pad")
def lppool_explicit_pad(model: onnx.ModelProto) -> int:
    """LpPool's padding as a separate zero Pad.

    When the pads equal TensorFlow's SAME pads, onnx2tf lowers LpPool as SAME average pooling times
    the kernel size, but SAME averaging divides by the in-bounds count, so border outputs come out
    too large (rel. L2 0.15). Any other pads onnx2tf already turns into a zero Pad, exactly as here,
    so rewriting every padded LpPool changes nothing for those and spares us mirroring onnx2tf's
    SAME test. Zeros add nothing to a sum of |x|^p, so the padded form computes the same.
    """
    candidates = [n for n in model.graph.node if n.op_type == "LpPool" and _auto_pad(n) == "NOTSET"
                  and any(_attr(n, "pads", []))]
    if not candidates:
        return 0
    shapes = _static_spatial_shapes(model)
    count = 0
    for node in candidates:
        window = _window(node, shapes)
        if window is None or not _pad_keeps_shape(window, _attr(node, "ceil_mode", 0)):
            continue
        _insert_zero_pad(model, node, window.begin, window.end)
        _del_attr(node, "pads")
        count += 1
    return count


@rewrite("maxpool-dilations")
def maxpool_dilations(model: onnx.ModelProto) -> int:
    """Dilated MaxPool as Gathers and Max, one spatial axis at a time.

    onnx2tf lowers a dilated MaxPool to TensorFlow's Dilation2D, which the TFLite converter rejects
    (not a builtin op). Max pooling is separable: the max over a window is the max over its rows of
    the max over its columns, and every tap is a Gather with constant indices. Taps that fall in the
    padding gather another tap of the same window instead, which leaves the max unchanged and needs
    no -inf padding value (that would wreck int8 calibration ranges).
    """
    candidates = [n for n in model.graph.node if n.op_type == "MaxPool" and len(n.output) == 1
                  and any(d > 1 for d in _attr(n, "dilations", []))]
    if not candidates:
        return 0
    shapes = _static_spatial_shapes(model)
    count = 0
    for node in candidates:
        window = _window(node, shapes)
        if window is None or _auto_pad(node) not in ("NOTSET", "VALID"):
            continue
        taps = [_axis_taps(window, axis, _attr(node, "ceil_mode", 0)) for axis in range(len(window.size))]
        if any(t is None for t in taps):
            continue
        _replace_with_gather_max(model, node, taps)
        count += 1
    return count


# --- pooling windows --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Window:
    """One node's sliding window, per spatial axis; pads as written (auto_pad not applied)."""

    size: list[int]
    kernel: list[int]
    strides: list[int]
    dilations: list[int]
    begin: list[int]
    end: list[int]


def _window(node, shapes: dict[str, tuple[int, ...]]) -> _Window | None:
    """The node's window, or None when its input's spatial shape is not static."""
    size = shapes.get(node.input[0])
    kernel = _attr(node, "kernel_shape", None)
    if kernel is None and node.op_type == "Conv" and len(node.input) > 1:
        kernel = shapes.get(node.input[1])  # Conv may leave kernel_shape to its weight's shape
    if size is None or kernel is None or len(kernel) != len(size):
        return None
    rank = len(size)
    pads = _attr(node, "pads", None) or [0] * 2 * rank
    return _Window(list(size), list(kernel), _attr(node, "strides", None) or [1] * rank,
                   _attr(node, "dilations", None) or [1] * rank, list(pads[:rank]), list(pads[rank:]))


def _same_pads(w: _Window, lower: bool) -> tuple[list[int], list[int]] | None:
    """ONNX's SAME_UPPER/SAME_LOWER padding: output = ceil(input / stride), the odd pixel at the
    end (UPPER) or the beginning (LOWER).

    None where the spec's formula goes negative (kernel smaller than stride): onnxruntime then
    shifts the windows inward while TensorFlow pads nothing, so there is no one meaning to keep.
    """
    begin, end = [], []
    for n, k, s, d in zip(w.size, w.kernel, w.strides, w.dilations, strict=True):
        total = (math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n
        if total < 0:
            return None
        first = total - total // 2 if lower else total // 2
        begin.append(first)
        end.append(total - first)
    return begin, end


def _auto_pad_mislowered(node, begin: list[int], end: list[int]) -> bool:
    """The auto_pad forms measured wrong in onnx2tf (see `explicit_auto_pad`); the rest stay as written."""
    if not any(begin) and not any(end):
        return False  # no padding at all: every op lowers that right
    if _auto_pad(node) == "SAME_LOWER":
        return node.op_type == "Conv" or begin != end
    if node.op_type == "AveragePool":
        return bool(_attr(node, "count_include_pad", 0))
    return node.op_type == "LpPool"


def _out_size(n: int, k: int, s: int, d: int, begin: int, end: int, ceil: int) -> int | None:
    """Output length along one axis; None where runtimes disagree on it, to leave such nodes alone.

    With ceil_mode, onnxruntime (like PyTorch) drops a last window that would start in the end
    padding, while ONNX shape inference keeps it; a window larger than the padded input is an error
    in some runtimes and an empty output in others.
    """
    span = n + begin + end - (k - 1) * d - 1
    if span < 0:
        return None
    out = (-(-span // s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= n + begin:
        return None
    return out


def _pad_keeps_shape(w: _Window, ceil: int) -> bool:
    """Moving pads into a Pad node can change a ceil_mode output size (the dropped-window rule
    looks at the input's end, which moves); rewrite only where it does not."""
    return all(
        _out_size(n, k, s, d, b, e, ceil) == _out_size(n + b + e, k, s, d, 0, 0, ceil) is not None
        for n, k, s, d, b, e in zip(w.size, w.kernel, w.strides, w.dilations, w.begin, w.end, strict=True))


def _axis_taps(w: _Window, axis: int, ceil: int) -> list[list[int]] | None:
    """For each kernel tap on `axis`, the input index each output reads; taps outside the input
    read the window's first in-bounds tap. None if some window has no in-bounds tap."""
    n, k, s, d = w.size[axis], w.kernel[axis], w.strides[axis], w.dilations[axis]
    begin = w.begin[axis]
    out = _out_size(n, k, s, d, begin, w.end[axis], ceil)
    if out is None:
        return None
    taps = [[0] * out for _ in range(k)]
    for o in range(out):
        inside = [o * s - begin + t * d for t in range(k) if 0 <= o * s - begin + t * d < n]
        if not inside:
            return None
        for t in range(k):
            i = o * s - begin + t * d
            taps[t][o] = i if 0 <= i < n else inside[0]
    return taps


# --- graph editing ----------------------------------------------------------------------------------


def _insert_zero_pad(model, node, begin: list[int], end: list[int]) -> None:
    """Put a constant-zero Pad in front of `node`'s first input (batch and channels unpadded)."""
    onnx = require("onnx")
    pads = _fresh(model, f"{node.name or node.op_type}_pads")
    padded = _fresh(model, f"{node.name or node.op_type}_padded")
    model.graph.initializer.append(
        onnx.numpy_helper.from_array(np.array([0, 0, *begin, 0, 0, *end], dtype=np.int64), pads))
    pad = onnx.helper.make_node("Pad", [node.input[0], pads], [padded], name=padded, mode="constant")
    _insert_before(model, node, [pad])
    node.input[0] = padded


def _replace_with_gather_max(model, node, taps: list[list[list[int]]]) -> None:
    """Replace `node` with, per spatial axis, one Gather per tap and a Max over them."""
    onnx = require("onnx")
    base = node.name or node.op_type
    current, new_nodes = node.input[0], []
    for axis, axis_taps in enumerate(taps):
        gathered = []
        for t, indices in enumerate(axis_taps):
            idx = _fresh(model, f"{base}_axis{axis}_tap{t}_idx")
            model.graph.initializer.append(onnx.numpy_helper.from_array(np.array(indices, np.int64), idx))
            out = _fresh(model, f"{base}_axis{axis}_tap{t}")
            new_nodes.append(onnx.helper.make_node("Gather", [current, idx], [out], name=out, axis=axis + 2))
            gathered.append(out)
        name = _fresh(model, f"{base}_axis{axis}_max")
        current = node.output[0] if axis == len(taps) - 1 else name
        new_nodes.append(onnx.helper.make_node("Max", gathered, [current], name=name))
    _insert_before(model, node, new_nodes)
    model.graph.node.remove(node)


def _insert_before(model, node, new_nodes: list) -> None:
    """Insert right before `node`, which keeps the graph topologically sorted."""
    nodes = model.graph.node
    at = list(nodes).index(node)
    for offset, new in enumerate(new_nodes):
        nodes.insert(at + offset, new)


def _fresh(model, base: str) -> str:
    """A tensor/node name nothing in the graph uses yet (TensorFlow-safe as long as `base` is)."""
    graph = model.graph
    taken = {t.name for t in graph.initializer} | {v.name for v in (*graph.input, *graph.output)}
    taken |= {name for n in graph.node for name in (n.name, *n.input, *n.output)}
    name, i = base, 1
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    return name


def _static_spatial_shapes(model) -> dict[str, tuple[int, ...]]:
    """Tensor name -> its dims after batch and channels, for tensors whose dims there are all known.
    Batch and channels may stay symbolic: no pass here depends on them."""
    onnx = require("onnx")
    graph = onnx.shape_inference.infer_shapes(model).graph
    shapes = {t.name: tuple(t.dims[2:]) for t in graph.initializer if len(t.dims) >= 3}
    for value in (*graph.input, *graph.value_info, *graph.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims) >= 3 and all(d.HasField("dim_value") and d.dim_value > 0 for d in dims[2:]):
            shapes[value.name] = tuple(d.dim_value for d in dims[2:])
    return shapes


def _attr(node, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return require("onnx").helper.get_attribute_value(a)
    return default


def _auto_pad(node) -> str:
    value = _attr(node, "auto_pad", b"NOTSET")
    return value.decode() if isinstance(value, bytes) else value


def _set_attr(node, name: str, value) -> None:
    _del_attr(node, name)
    node.attribute.append(require("onnx").helper.make_attribute(name, value))


def _del_attr(node, name: str) -> None:
    for a in list(node.attribute):
        if a.name == name:
            node.attribute.remove(a)
