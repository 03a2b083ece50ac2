"""What the hub's activations span, measured on onnxruntime: int8 calibration ranges and the fp16
range check (activations beyond float16's maximum, and float constants it cannot hold).

The measuring functions (`activation_ranges`, `fp16_overflows`) import onnx and onnxruntime and run
in a child stage; the rest is data the parent may use without importing a framework.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import islice

import numpy as np

from bridge.converters.base import Feed
from bridge.errors import ConversionError
from bridge.lazy import require
from bridge.modes import Mode

FP16_MAX = 65504.0  # the largest finite float16; anything larger rounds to Inf
FP16_ZERO = 2.0**-25  # half float16's smallest subnormal (2**-24): nonzero values up to here round to 0
SHOWN = 3  # tensors named in the warning; the rest are counted
_FLOAT_TYPES = (1, 11)  # TensorProto FLOAT, DOUBLE
_CHUNK = 1 << 20  # elements measured at a time: a weight can be large


def activation_ranges(model, feeds: Sequence[Feed]) -> dict[str, tuple[float, float]]:
    """Min/max of every float tensor the graph computes (its outputs included) over `feeds`, from
    onnxruntime on the hub with every such tensor made a graph output (coremltools' own activation
    calibration calls `predict`, which exists only on macOS). NaN/Inf values are left out of the
    range; a tensor with no finite value has none."""
    onnx = require("onnx")
    ort = require("onnxruntime")
    if not feeds:
        raise ConversionError("activation ranges need at least one sample")
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    inferred = onnx.shape_inference.infer_shapes(probe)
    floats = {vi.name for vi in inferred.graph.value_info if vi.type.tensor_type.elem_type == 1}
    existing = {o.name for o in probe.graph.output}
    for name in sorted(floats - existing):
        probe.graph.output.append(onnx.helper.make_tensor_value_info(name, 1, None))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    for feed in feeds:
        for name, value in zip(names, session.run(names, feed), strict=True):
            if value.dtype != np.float32:
                continue
            value = value[np.isfinite(value)]
            if value.size == 0:
                continue
            lo[name] = min(lo.get(name, np.inf), float(value.min()))
            hi[name] = max(hi.get(name, -np.inf), float(value.max()))
    return {n: (lo[n], hi[n]) for n in lo}


@dataclass(frozen=True)
class Overflow:
    """A float tensor of the hub whose magnitude exceeds what float16 holds."""

    tensor: str
    node: str  # the node that computes it, by its name in the source (or "input")
    max_abs: float

    def __str__(self) -> str:
        where = f"input {self.tensor}" if self.node == "input" else f"{self.node} (tensor {self.tensor})"
        return f"{where}: max |x| {self.max_abs:.4g}"


@dataclass(frozen=True)
class Constant:
    """A float constant of the hub (an initializer or a Constant node's value, in the graph or a
    subgraph) that float16 cannot hold: beyond +-65504, or a single value it rounds to zero."""

    tensor: str
    node: str | None  # the Constant node, by its name in the source; None for an initializer
    max_abs: float  # over the finite values: +-Inf stays Inf in float16
    size: int
    graph: str | None = None  # the node whose subgraph holds it; None for the main graph

    @property
    def overflows(self) -> bool:
        return self.max_abs > FP16_MAX

    @property
    def vanishes(self) -> bool:
        """A single nonzero value float16 rounds to zero: nearly always an epsilon (F.normalize's
        and BERT's LayerNorm's 1e-12) guarding a division or a square root, which then no longer
        guards it. Tensors of such values are left out: measured on a torchvision MobileNetV2
        export, 17 BatchNorm-folded Conv biases are all noise near 1e-8, and losing an addend that
        small changes no float16 sum it joins."""
        return self.size == 1 and 0.0 < self.max_abs <= FP16_ZERO

    def __str__(self) -> str:
        where = f"initializer {self.tensor}" if self.node is None else f"{self.node} (tensor {self.tensor})"
        return f"{where} in {self.graph}" if self.graph else where


def fp16_overflows(hub_path: str, sets: Sequence[Sequence[Feed]],
                   node_names: dict[str, str]) -> list[Overflow | Constant]:
    """The `fp16-ranges` stage: every input and computed tensor of the hub beyond +-65504 on the
    samples of `sets` (parity and calibration), in graph order (the first one is where the overflow
    starts), then every float constant float16 cannot hold (`fp16_constants`). A Constant node's
    output is reported as a constant only."""
    onnx = require("onnx")
    model = onnx.load(hub_path)
    feeds = [feed for samples in sets for feed in samples]
    ranges = activation_ranges(model, feeds)
    ranges.update(_input_ranges(model, feeds))
    produced = [("input", i.name) for i in model.graph.input]
    produced += [(node_names.get(n.name, n.name), out) for n in model.graph.node if n.op_type != "Constant"
                 for out in n.output]
    found: list[Overflow | Constant] = []
    for node, name in produced:
        peak = max(map(abs, ranges.get(name, (0.0, 0.0))))
        if peak > FP16_MAX:
            found.append(Overflow(name, node, peak))
    return found + fp16_constants(model, node_names)


def fp16_constants(model, node_names: dict[str, str]) -> list[Constant]:
    """Float constants beyond +-65504, or single values float16 rounds to zero, in graph order.
    Read from the graph, not measured: the activation ranges see the main graph's Constant nodes
    but neither initializers nor subgraphs."""
    found = []
    for tensor, node, graph, values in _float_constants(model.graph, node_names, None):
        c = Constant(tensor, node, _peak(values), values.size, graph)
        if c.overflows or c.vanishes:
            found.append(c)
    return found


def _float_constants(graph, node_names: dict[str, str], owner: str | None):
    """(tensor, Constant node or None, owner, values) for each float constant of `graph` and of
    the subgraphs (If branches, Loop and Scan bodies) of its nodes."""
    to_array = require("onnx").numpy_helper.to_array
    for t in graph.initializer:
        if t.data_type in _FLOAT_TYPES:
            yield t.name, None, owner, to_array(t)
    for node in graph.node:
        name = node_names.get(node.name, node.name) if owner is None else node.name  # subgraphs keep names
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            values = _constant_value(node, to_array)
            if values is not None:
                yield node.output[0], name, owner, values
        for attr in node.attribute:
            for g in [attr.g] if attr.HasField("g") else attr.graphs:
                yield from _float_constants(g, node_names, f"{node.op_type} {name} ({attr.name})")


def _constant_value(node, to_array) -> np.ndarray | None:
    for attr in node.attribute:
        if attr.name == "value" and attr.t.data_type in _FLOAT_TYPES:
            return to_array(attr.t)
        if attr.name == "sparse_value" and attr.sparse_tensor.values.data_type in _FLOAT_TYPES:
            return to_array(attr.sparse_tensor.values)
        if attr.name == "value_float":
            return np.array([attr.f], np.float32)
        if attr.name == "value_floats":
            return np.array(attr.floats, np.float32)
    return None


def _peak(values: np.ndarray) -> float:
    """The largest finite |x|, a chunk at a time (a whole-tensor `abs` would double a large weight
    in memory). NaN and +-Inf are left out: they are the same in float16."""
    flat = np.ravel(values)
    peak = 0.0
    for start in range(0, flat.size, _CHUNK):
        mag = np.abs(flat[start:start + _CHUNK])
        peak = max(peak, float(mag.max(initial=0.0, where=mag < np.inf)))
    return peak


def _input_ranges(model, feeds: Sequence[Feed]) -> dict[str, tuple[float, float]]:
    """Inputs overflow too: Core ML casts an fp32 input to fp16 at its first fp16 op."""
    out = {}
    for spec in model.graph.input:
        values = [f[spec.name][np.isfinite(f[spec.name])] for f in feeds
                  if spec.name in f and f[spec.name].dtype.kind == "f"]
        values = [v for v in values if v.size]
        if values:
            out[spec.name] = (min(float(v.min()) for v in values), max(float(v.max()) for v in values))
    return out


def computes_in_fp16(target: str, mode: Mode) -> bool:
    """Whether the lane runs `mode` in float16 somewhere: TFLite's fp16 files (on GPU delegates;
    CPU kernels widen to fp32) and every Core ML mode of fp16 compute precision."""
    if target == "tflite":
        from bridge.converters.tflite.quantize import MODES

        return MODES[mode].float16
    if target == "coreml":
        from bridge.converters.coreml.compress import MODES

        return MODES[mode].precision == "fp16"
    return False


def fp16_warnings(found: Sequence[Overflow | Constant], artifacts: Sequence[str]) -> list[str]:
    """The warnings for what `fp16_overflows` found: one for activations, one for constants (they
    reach different artifacts, at different times)."""
    activations = [f for f in found if isinstance(f, Overflow)]
    constants = constant_warning([f for f in found if isinstance(f, Constant)], artifacts)
    return ([overflow_warning(activations, artifacts)] if activations else []) + ([constants] if constants else [])


def overflow_warning(found: Sequence[Overflow], artifacts: Sequence[str]) -> str:
    """One warning: which tensors overflow (the first few), by how much, and which artifacts."""
    gpu = (" (TFLite runs fp16 files in fp32 on CPU, in fp16 on GPU delegates)"
           if any(a.startswith("tflite/") for a in artifacts) else "")
    return (f"fp16 overflow: {len(found)} tensor(s) exceed {FP16_MAX:.0f} (the float16 maximum) in magnitude "
            f"on the parity and calibration samples, and become Inf wherever they are computed in float16: "
            f"{_listed(map(str, found), len(found))}. Affected: {', '.join(artifacts)}{gpu}; "
            "use fp32 for these or rescale the model")


def constant_warning(found: Sequence[Constant], artifacts: Sequence[str]) -> str | None:
    """One warning, or None when no artifact is hurt. A value that rounds to zero in float16 is zero
    in every Core ML fp16 artifact. TFLite's fp16 files are hurt by neither kind: they keep every
    constant float16 cannot hold in float32 (converters/tflite/fp16.py), and constants beyond
    +-65504 hurt no artifact, since coremltools computes any op reading such a constant in fp32
    (its FP16ComputePrecision pass; only magnitudes from 1e38, masks' stand-ins for Inf, become Inf
    on purpose)."""
    tiny = [c for c in found if c.vanishes]
    hurt = [a for a in artifacts if not a.startswith("tflite/")]
    if not tiny or not hurt:
        return None
    return ("fp16 constants: "
            f"{len(tiny)} single-valued float constant(s) are at or below 2**-25 (half the smallest "
            "float16 subnormal) and round to zero in float16, where an epsilon no longer keeps a division "
            f"or square root from 0: {_listed((f'{c}: |x| {c.max_abs:.4g}' for c in tiny), len(tiny))}. "
            f"Affected: {', '.join(hurt)}")


def _listed(items: Iterable[str], total: int) -> str:
    """The first `SHOWN` items, and how many more."""
    shown = "; ".join(islice(items, SHOWN))
    return shown + (f"; and {total - SHOWN} more" if total > SHOWN else "")
