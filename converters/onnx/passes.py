"""Rewrites of the hub graph itself, for patterns onnxruntime computes wrongly.

onnxruntime runs the hub graph and is the reference every lane's parity is measured against (for an
ONNX source it is the source too), so where it is wrong the hub must not contain the pattern: each
pass here re-expresses one pattern with ops onnxruntime, the ONNX reference evaluator, PyTorch and
the target lanes all compute alike. Lane-specific workarounds belong in the lanes (see
converters/tflite/rewrites.py). Passes run after onnxslim, which would otherwise fold them back.
A pass may also spell out what onnx's own checker cannot infer (an attribute left at its default
that a function body reads), so a valid graph is not refused at the hub's check.

Every pass ships with a fixture (tests/converters/onnx/test_passes.py) showing onnxruntime off the
source framework on the original graph and on it after the rewrite; when an onnxruntime upgrade
fixes a pattern that fixture fails and the pass can go. Passes touch only top-level nodes whose
input shape is static, and edit the model in place.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from bridge.base.lazy import require
from bridge.converters.onnx.graph import (
    PassRegistry,
    Window,
    ceil_out_size,
    del_attr,
    fresh_name,
    get_attr,
    set_attr,
    spatial_shapes,
    tensor_types,
)
from bridge.converters.onnx.graph import window as window_of

if TYPE_CHECKING:
    import onnx

_REGISTRY = PassRegistry("hub")
hub_pass = _REGISTRY.register

PIPELINE: tuple[str, ...] = ("avgpool-ceil-overhang", "mvn-default-axes")


def apply_passes(model: onnx.ModelProto, passes: Iterable[str] = PIPELINE) -> list[str]:
    """Run `passes` in order on `model` in place; returns e.g. `["avgpool-ceil-overhang x2"]` for the
    passes that changed something, for the hub's warnings."""
    return _REGISTRY.apply(model, passes)


# --- passes -----------------------------------------------------------------------------------------


@hub_pass("avgpool-ceil-overhang")
def avgpool_ceil_overhang(model: onnx.ModelProto) -> int:
    """AveragePool(ceil_mode=1, count_include_pad=1) whose last window overhangs the padded input,
    as the same pool in floor mode with the overhang padded too, then a Mul that fixes the divisor.

    PyTorch's `AvgPool*d(..., ceil_mode=True)` exports exactly this node (count_include_pad defaults
    to True). An overhanging window must divide by its size inside the padded input (PyTorch, TFLite
    and ONNX's reference evaluator do), but onnxruntime's kernel before opset 19 divides by the full
    kernel (microsoft/onnxruntime#16203): rel. L2 0.13 for AvgPool2d(3, 2, padding=1) on 10x7, 0.43
    for AvgPool2d(2, 2) on 9x7. With the overhang padded every window is whole and divides by the
    kernel size, which every runtime agrees on; the Mul then divides the last ones by their true size.

    The correction is one [1, 1, *spatial] constant, the Mul's first input: onnx2tf lowers a Mul
    with the constant first right for every shape measured (batch 2, C equal to H and W), while
    with the constant second it broadcasts [1, 1, H, W] wrongly or crashes. The overhang goes into
    the pool's own pads, not a Pad node: onnx2tf pads the wrong axes of a graph input shaped
    [N, C, C, C].
    """
    candidates = [n for n in model.graph.node if n.op_type == "AveragePool" and get_attr(n, "ceil_mode", 0)
                  and get_attr(n, "count_include_pad", 0) and get_attr(n, "auto_pad", b"NOTSET") == b"NOTSET"]
    if not candidates:
        return 0
    types, shapes = tensor_types(model), spatial_shapes(model)
    count = 0
    for node in candidates:
        typed = types.get(node.input[0])
        window = _overhang(window_of(node, shapes), typed[0] if typed else None)
        if window is None or not any(window.overhang):
            continue  # dynamic shape, an output size runtimes disagree on, or nothing to fix
        _replace_with_whole_windows(model, node, window)
        count += 1
    return count


MVN_DEFAULT_AXES = [0, 2, 3]  # MeanVarianceNormalization's `axes` when absent (opsets 9 and 13)


@hub_pass("mvn-default-axes")
def mvn_default_axes(model: onnx.ModelProto) -> int:
    """MeanVarianceNormalization without `axes`, with its default [0, 2, 3] written out: its
    function body reads `axes` into a Constant, and onnx's checker (1.19-1.20, full_check) fails on
    a Constant left without a value when the attribute is absent, so the hub refused onnx's own
    test_mvn. Same node, same numbers; onnxruntime computes both alike."""
    changed = 0
    for node in model.graph.node:
        if node.op_type == "MeanVarianceNormalization" and node.domain in ("", "ai.onnx") and \
                get_attr(node, "axes", None) is None:
            set_attr(node, "axes", MVN_DEFAULT_AXES)
            changed += 1
    return changed


# --- pooling windows --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Window:
    """A ceil-mode AveragePool's windows along each spatial axis, and what the correction needs."""

    elem_type: int
    kernel: list[int]
    begin: list[int]
    end: list[int]
    out: list[int]
    overhang: list[int]  # how far the last window reaches past the padded input; less than a stride

    def scale(self) -> np.ndarray:
        """Per output position, kernel size / the window's size inside the padded input. Windows are
        boxes, so this is an outer product of one factor per axis, and as an overhang is shorter than
        a stride only the last window along an axis has a factor other than 1."""
        scale = np.ones([], np.float64)
        for k, o, extra in zip(self.kernel, self.out, self.overhang, strict=True):
            inside = np.full(o, k, np.float64)
            inside[-1] -= extra
            scale = np.multiply.outer(scale, k / inside)
        return scale


def _overhang(w: Window | None, elem_type: int | None) -> _Window | None:
    """The node's windows and their overhang, or None when its input's spatial shape is not static
    or runtimes disagree on the output size."""
    if w is None or elem_type is None or any(d != 1 for d in w.dilations):
        return None  # AveragePool has dilations from opset 19 on, where onnxruntime is right
    out, overhang = [], []
    for n, k, s, b, e in zip(w.size, w.kernel, w.strides, w.begin, w.end, strict=True):
        o = ceil_out_size(n, k, s, b, e)
        if o is None:
            return None
        out.append(o)
        overhang.append(max(0, (o - 1) * s + k - (n + b + e)))
    return _Window(elem_type, list(w.kernel), list(w.begin), list(w.end), out, overhang)


# --- graph editing ----------------------------------------------------------------------------------


def _replace_with_whole_windows(model, node, w: _Window) -> None:
    """Pad the overhang too and drop ceil_mode, so every window is whole and divides by the kernel
    size, then Mul by `w.scale()` so the last ones divide by their true size instead.

    The longer end padding stays below the kernel size, as onnxruntime requires: the last window
    starts inside the input or its begin padding (`_ceil_out_size`), so it ends less than a kernel
    past the input. In floor mode the padded axis then yields the same `w.out` windows.
    """
    onnx = require("onnx")
    base = node.name or node.op_type
    dtype = onnx.helper.tensor_dtype_to_np_dtype(w.elem_type)
    values = w.scale().astype(dtype)[np.newaxis, np.newaxis]
    scale, whole = fresh_name(model, f"{base}_count_fix"), fresh_name(model, f"{base}_whole_windows")
    model.graph.initializer.append(onnx.numpy_helper.from_array(values, scale))
    set_attr(node, "pads", [*w.begin, *(e + x for e, x in zip(w.end, w.overhang, strict=True))])
    del_attr(node, "ceil_mode")
    mul = onnx.helper.make_node("Mul", [scale, whole], [node.output[0]], name=scale)
    _copy_value_info(model, node.output[0], whole)
    node.output[0] = whole
    nodes = model.graph.node
    nodes.insert(list(nodes).index(node) + 1, mul)  # keeps the graph topologically sorted


def _copy_value_info(model, source: str, name: str) -> None:
    """Declare `name` with `source`'s type and shape: hub graphs type their tensors, and onnx2tf
    guesses the layout of an untyped one."""
    graph = model.graph
    for value in (*graph.value_info, *graph.output):
        if value.name == source:
            typed = graph.value_info.add()
            typed.CopyFrom(value)
            typed.name = name
            return


