"""What the TFLite lane refuses, found before anything converts: every node at once, with its reason.

Two sources:
- onnx2tf 2.x's own node validators (`build_op_coverage_report`, the check its `flatbuffer_direct`
  backend makes node by node while converting): ops without a TFLite builtin lowering, and
  attribute, rank or dtype combinations its lowerings do not take. They run on the graph as the
  lane hands it to onnx2tf: after our rewrites (`rewrites.PIPELINE`) and onnx2tf's own
  preprocessing, so a pattern a rewrite fixes (Conv SAME_LOWER, dilated MaxPool) is not refused.
- `REFUSED`: combinations onnx2tf's validators let through but that fail later, measured on onnx's
  node tests: refused by onnx2tf during lowering, lowered wrongly, or run by no ai-edge-litert
  kernel. Refusing them up front, all at once, is better than a failed conversion or a file that
  fails parity.

The lane's declared preflight (`unsupported`, run before every conversion) checks op types and
`REFUSED` only, and asks onnx2tf's validators when that finds something, so the error names every
refused node at once; a graph that converts never pays for them (2-8 s on a ResNet50). `bridge
inspect` asks them always (`unsupported_all`), and so does the lane when onnx2tf itself fails.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from bridge.base.lane import Unsupported
from bridge.base.lazy import require
from bridge.converters.onnx.graph import get_attr

# op type -> a check `(node, graph) -> reason or None`. Each entry is a measured failure of onnx2tf
# 2.6.9 or of ai-edge-litert's kernels that its own validators let through (benchmarks/conformance),
# kept until a rewrite or an upgrade fixes it: refused up front rather than after a conversion.
REFUSED: dict[str, Callable] = {}


def refuse(*op_types: str) -> Callable[[Callable], Callable]:
    def wrap(check: Callable) -> Callable:
        for op in op_types:
            REFUSED[op] = check
        return check
    return wrap


class _Graph:
    """What checks may ask of the graph: each tensor's element type (shape inference, run once)."""

    def __init__(self, model):
        self.model = model
        self.outputs = {o.name for o in model.graph.output}
        self._types: dict[str, int] | None = None
        self._shapes: dict[str, tuple[int | None, ...]] = {}

    def constant(self, name: str):
        """An initializer's values, or None for a computed tensor (or one whose bytes were not loaded)."""
        onnx = require("onnx")
        for t in self.model.graph.initializer:
            if t.name == name:
                if t.data_location == onnx.TensorProto.EXTERNAL:
                    return None
                return onnx.numpy_helper.to_array(t)
        return None

    def elem_type(self, name: str) -> int | None:
        self._infer()
        return self._types.get(name)

    def shape(self, name: str) -> tuple[int | None, ...] | None:
        self._infer()
        return self._shapes.get(name)

    def _infer(self) -> None:
        if self._types is None:
            from bridge.converters.onnx.graph import tensor_types

            inferred = tensor_types(self.model)
            self._types = {n: t for n, (t, _) in inferred.items()}
            self._types.update({t.name: t.data_type for t in self.model.graph.initializer})
            self._shapes = {n: s for n, (_, s) in inferred.items()}
            self._shapes.update({t.name: tuple(t.dims) for t in self.model.graph.initializer})


_FLOAT16, _DOUBLE = 10, 11  # TensorProto element types
_INTEGERS = (2, 3, 4, 5, 6, 7, 12, 13)  # uint8, int8, uint16, int16, int32, int64, uint32, uint64


@refuse("LSTM", "RNN")
def _stateful_sequence(node, graph: _Graph) -> str | None:
    return ("onnx2tf 2.6.9 lowers it to TFLite's UNIDIRECTIONAL_SEQUENCE op, whose state lives in variable "
            "tensors and carries over from one call to the next: every call after the first starts from the "
            "last call's state (ONNX starts from initial_h/initial_c, zeros by default)")


@refuse("AveragePool")
def _dilated_average_pool(node, graph: _Graph) -> str | None:
    if any(d > 1 for d in _attr(node, "dilations", [])):
        return "onnx2tf 2.6.9 lowers no dilated AveragePool (dilations must be 1)"
    return None


@refuse("Cast", "CastLike")
def _cast_to_float16(node, graph: _Graph) -> str | None:
    """onnx2tf 2.6.9 writes a cast to float16 as a cast to float32, so the values are never rounded;
    the lane makes it float16 again where it is a graph output (`direct.restore_float16_outputs`),
    not inside the graph, where TFLite's float kernels would reject a float16 input."""
    to = _attr(node, "to", None) if node.op_type == "Cast" else graph.elem_type(node.input[1])
    if to == _FLOAT16 and node.output[0] not in graph.outputs:
        return "onnx2tf 2.6.9 writes a cast to float16 inside the graph as float32: its values are not rounded"
    return None


@refuse("CumSum")
def _double_cumsum(node, graph: _Graph) -> str | None:
    if graph.elem_type(node.input[0]) == _DOUBLE:
        return "TFLite's CUMSUM kernel takes no float64 input"
    return None


@refuse("Max", "Min")
def _double_max_min(node, graph: _Graph) -> str | None:
    if any(graph.elem_type(name) == _DOUBLE for name in node.input if name):
        return "TFLite's MAXIMUM and MINIMUM kernels take no float64 input"
    return None


@refuse("GatherElements")
def _negative_gather_indices(node, graph: _Graph) -> str | None:
    indices = graph.constant(node.input[1])
    if indices is not None and (indices < 0).any():
        return "onnx2tf 2.6.9 lowers it to GATHER_ND, which ai-edge-litert runs with non-negative indices only"
    return None


XNNPACK_MAX_RANK = 6  # XNN_MAX_TENSOR_DIMS


@refuse("Concat", "ReduceSum", "NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss")
def _above_xnnpack_rank(node, graph: _Graph) -> str | None:
    """onnx's *_NCd1d2d3d4d5 loss tests (rank 7) convert, and run on TFLite's plain kernels, but
    XNNPACK, the default CPU delegate the parity runs on as a phone would, fails to prepare the
    file: its CONCATENATION and SUM take at most 6 dims (elementwise ops over rank 7 do run)."""
    shapes = [graph.shape(name) for name in (*node.input, *node.output) if name]
    if any(s is not None and len(s) > XNNPACK_MAX_RANK for s in shapes):
        return (f"XNNPACK, TFLite's default CPU delegate, fails to prepare onnx2tf 2.6.9's CONCATENATION and "
                f"SUM over tensors above rank {XNNPACK_MAX_RANK}")
    return None


@refuse("OneHot")
def _float_one_hot_indices(node, graph: _Graph) -> str | None:
    if graph.elem_type(node.input[0]) not in (None, *_INTEGERS):
        return "onnx2tf 2.6.9 reads float indices otherwise than ONNX's cast to int64 (rel. L2 0.63 on the node tests)"
    return None


@dataclass(frozen=True)
class _ResizeDims:
    """A Resize's input dims, the output dims `scales` or `sizes` give (`axes` expanded), the exact
    ONNX scale of each axis (the float given, or out/in for `sizes`), and the axes resized."""

    shape: list[int]
    out: list[int]
    scales: list[Fraction]
    axes: list[int]
    by_sizes: bool


@refuse("Resize")
def _resize(node, graph: _Graph) -> str | None:
    dims = _resize_dims(node, graph)
    if dims is None:
        return None
    for check in (_axes_order, _aspect_policy, _downsampling_resize, _nearest_rounding):
        reason = check(node, dims)
        if reason:
            return reason
    return None


def _resize_dims(node, graph: _Graph) -> _ResizeDims | None:
    """The dims, when all are known before running."""
    shape = graph.shape(node.input[0])
    scales = graph.constant(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    sizes = graph.constant(node.input[3]) if len(node.input) > 3 and node.input[3] else None
    if shape is None or None in shape or (scales is None and sizes is None):
        return None  # dims or factors known only at run time: onnx2tf's own check decides
    axes = [a % len(shape) for a in _attr(node, "axes", [])] or list(range(len(shape)))
    given = scales if scales is not None else sizes
    if len(given) != len(axes):
        return None
    out, exact = list(shape), [Fraction(1)] * len(shape)
    for a, v in zip(axes, given, strict=True):
        out[a] = int(np.floor(shape[a] * v)) if scales is not None else int(v)
        exact[a] = Fraction(float(v)) if scales is not None else Fraction(int(v), shape[a])
    return _ResizeDims(list(shape), out, exact, axes, scales is None)


def _axes_order(node, dims: _ResizeDims) -> str | None:
    """test_resize_upsample_scales_nearest_axes_3_2: scales [3, 2] over axes [3, 2] make [1, 1, 4, 6];
    onnx2tf 2.6.9 applies them in axis order and makes [1, 1, 6, 4]."""
    if dims.axes != sorted(dims.axes):
        return "onnx2tf 2.6.9 applies scales or sizes in axis order, not in the order `axes` lists"
    return None


def _aspect_policy(node, dims: _ResizeDims) -> str | None:
    """keep_aspect_ratio_policy not_larger/not_smaller resizes every axis in `axes` by one scale
    (the smallest or largest of sizes/input), which onnx2tf 2.6.9 does not: it writes `sizes` as
    given (test_resize_downsample_sizes_nearest_not_larger: [1, 3] where ONNX gives [1, 2])."""
    policy = _attr(node, "keep_aspect_ratio_policy", "stretch")
    if not dims.by_sizes or policy == "stretch":
        return None
    scale = (min if policy == "not_larger" else max)(dims.scales[a] for a in dims.axes)
    if any(math.floor(dims.shape[a] * scale + Fraction(1, 2)) != dims.out[a] for a in dims.axes):
        return f"onnx2tf 2.6.9 ignores keep_aspect_ratio_policy={policy}: it resizes to `sizes` as given"
    return None


def _downsampling_resize(node, dims: _ResizeDims) -> str | None:
    """Downsampling, as measured on the node tests (rel. L2 0.07-0.49): onnx2tf 2.6.9 places
    samples by the output/input size ratio where `scales` says otherwise (0.6 of 4 is 2: ratio 0.5;
    every mode), and for linear and cubic ignores `antialias` and maps an output of length 1 under
    pytorch_half_pixel elsewhere than ONNX (to 0): refused before converting."""
    shape, out = dims.shape, dims.out
    if not any(o < n for o, n in zip(out, shape, strict=True)):
        return None
    if any(o != n * f for o, n, f in zip(out, shape, dims.scales, strict=True)):
        return "onnx2tf 2.6.9 downsamples by the size ratio, not by scales that do not divide the input evenly"
    if _attr(node, "mode", "nearest") not in ("linear", "cubic"):
        return None
    if _attr(node, "antialias", 0):
        return "onnx2tf 2.6.9 downsamples without antialias=1's wider filter"
    if _attr(node, "coordinate_transformation_mode", "half_pixel") == "pytorch_half_pixel" and \
            any(o == 1 < n for o, n in zip(out, shape, strict=True)):
        return "onnx2tf 2.6.9 maps an output of length 1 under pytorch_half_pixel elsewhere than ONNX's 0"
    return None


_NEAREST_ROUNDING = {"round_prefer_floor": lambda v: math.ceil(v - Fraction(1, 2)),
                     "round_prefer_ceil": lambda v: math.floor(v + Fraction(1, 2)),
                     "floor": math.floor, "ceil": math.ceil}


def _nearest_rounding(node, dims: _ResizeDims) -> str | None:
    """Nearest Resize, which onnx2tf 2.6.9 lowers to RESIZE_NEAREST_NEIGHBOR: TFLite takes input
    floor((x + 0.5) * in/out) under half_pixel and floor(x * in/out) under asymmetric, whatever
    `nearest_mode` says. Refused where that picks another input sample than ONNX on some axis, in
    exact arithmetic (test_resize_downsample_sizes_nearest, 4 to 3 and 2 to 1 with ONNX's default
    round_prefer_floor: rel. L2 0.75); an integer upsampling by 2 or 3 has no ties and converts."""
    ctm = _attr(node, "coordinate_transformation_mode", "half_pixel")
    mode = _attr(node, "nearest_mode", "round_prefer_floor")
    if _attr(node, "mode", "nearest") != "nearest" or ctm not in ("half_pixel", "asymmetric") or \
            mode not in _NEAREST_ROUNDING:
        return None  # other modes are onnx2tf's own check's to refuse
    offset = Fraction(1, 2) if ctm == "half_pixel" else Fraction(0)
    for n, o, f in zip(dims.shape, dims.out, dims.scales, strict=True):
        onnx = [min(max(_NEAREST_ROUNDING[mode]((x + offset) / f - offset), 0), n - 1) for x in range(o)]
        tflite = [min(math.floor((x + offset) * Fraction(n, o)), n - 1) for x in range(o)]
        if onnx != tflite:
            return f"onnx2tf 2.6.9 picks nearest samples by TFLite's floor under {ctm}, not by nearest_mode={mode}"
    return None


def unsupported(hub_path: str, node_names: dict[str, str], options: object = None) -> list[Unsupported]:
    """The lane's declared preflight, run in its conversion stage before onnx2tf: the quick check,
    then the thorough one only when the quick one finds something."""
    onnx = require("onnx")
    quick = refused_ops(onnx.load(hub_path, load_external_data=False), node_names, thorough=False)
    return quick and refused_ops(onnx.load(hub_path), node_names)


def unsupported_all(hub_path: str, node_names: dict[str, str], options: object = None) -> list[Unsupported]:
    """For `bridge inspect`: the thorough check always (onnx2tf's validators on every node)."""
    onnx = require("onnx")
    return refused_ops(onnx.load(hub_path), node_names)


def refused_ops(model, node_names: dict[str, str] | None = None, rewritten: bool = False,
                thorough: bool = True) -> list[Unsupported]:
    """Every node of `model` (the hub) the lane would refuse, grouped by op type and reason.
    `rewritten`: the lane's rewrites already ran on `model`. Without `thorough`, only op types
    onnx2tf has no lowering for are checked, not each node's attributes: onnx2tf's node validators
    take 2-8 s on a ResNet50, longer than a conversion that fails at its first refused node."""
    from bridge.converters.tflite.rewrites import apply_rewrites

    if not rewritten:
        model = copy.deepcopy(model)
        apply_rewrites(model)
    names = node_names or {}
    found: dict[tuple[str, str], list[str]] = {}
    graph = _Graph(model)
    for node in model.graph.node:
        check = REFUSED.get(node.op_type)
        reason = check(node, graph) if check else None
        if reason:
            found.setdefault((node.op_type, reason), []).append(names.get(node.name, node.name))
    for issue in _onnx2tf_refusals(model) if thorough else _unknown_op_types(model):
        node = issue.get("node_name") or ""
        key = (issue.get("onnx_op") or "?", _reason(issue))
        found.setdefault(key, []).append(names.get(node, node))
    return [Unsupported(op, tuple(nodes), reason) for (op, reason), nodes in sorted(found.items())]


def _onnx2tf_refusals(model) -> list[dict]:
    """The nodes onnx2tf's flatbuffer_direct validators reject, as its coverage report lists them."""
    builder = require("onnx2tf.tflite_builder")
    with contextlib.redirect_stdout(io.StringIO()):
        graph, _ = builder.run_preprocess_pipeline(onnx_graph=copy.deepcopy(model))
        report = builder.build_op_coverage_report(onnx_graph=graph, output_file_name="model")
    custom = [{**n, "reason_code": "custom_op",
               "message": "lowered to a CUSTOM op that no stock TFLite runtime has"}
              for n in report.get("custom_lowered_nodes", [])]
    return [*report.get("unsupported_nodes", []), *custom]


def _unknown_op_types(model) -> list[dict]:
    """Nodes whose op type onnx2tf's flatbuffer_direct registry has no builtin lowering for."""
    registry = require("onnx2tf.tflite_builder.op_registry")
    known = set(registry.get_supported_onnx_ops())
    return [{"node_name": n.name, "onnx_op": n.op_type, "reason_code": "unsupported_onnx_op",
             "message": f"ONNX op is not supported by flatbuffer_direct: {n.op_type}"}
            for n in model.graph.node if n.op_type not in known and n.op_type != "Constant"]


def _reason(issue: dict) -> str:
    message = " ".join(str(issue.get("message") or "").split())
    code = issue.get("reason_code") or "unsupported"
    return f"{message} [{code}]" if message else code


def _attr(node, name: str, default):
    value = get_attr(node, name, default)
    return value.decode() if isinstance(value, bytes) else value
