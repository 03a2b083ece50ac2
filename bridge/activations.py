"""What the hub's activations span, measured on onnxruntime: int8 calibration ranges and the fp16
overflow check.

The measuring functions (`activation_ranges`, `fp16_overflows`) import onnx and onnxruntime and run
in a child stage; the rest is data the parent may use without importing a framework.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bridge.converters.base import Feed
from bridge.errors import ConversionError
from bridge.lazy import require
from bridge.modes import Mode

FP16_MAX = 65504.0  # the largest finite float16; anything larger rounds to Inf
SHOWN = 3  # tensors named in the warning; the rest are counted


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


def fp16_overflows(hub_path: str, feeds: Sequence[Feed], node_names: dict[str, str]) -> list[Overflow]:
    """The `fp16-ranges` stage: every input and computed tensor of the hub beyond +-65504 on
    `feeds`, in graph order (the first one is where the overflow starts)."""
    onnx = require("onnx")
    model = onnx.load(hub_path)
    ranges = activation_ranges(model, feeds)
    ranges.update(_input_ranges(model, feeds))
    produced = [("input", i.name) for i in model.graph.input]
    produced += [(node_names.get(n.name, n.name), out) for n in model.graph.node for out in n.output]
    found = []
    for node, name in produced:
        peak = max(map(abs, ranges.get(name, (0.0, 0.0))))
        if peak > FP16_MAX:
            found.append(Overflow(name, node, peak))
    return found


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


def overflow_warning(found: Sequence[Overflow], artifacts: Sequence[str]) -> str:
    """One warning: which tensors overflow (the first few), by how much, and which artifacts."""
    shown = "; ".join(str(o) for o in found[:SHOWN])
    more = f"; and {len(found) - SHOWN} more" if len(found) > SHOWN else ""
    gpu = (" (TFLite runs fp16 files in fp32 on CPU, in fp16 on GPU delegates)"
           if any(a.startswith("tflite/") for a in artifacts) else "")
    return (f"fp16 overflow: {len(found)} tensor(s) exceed {FP16_MAX:.0f} (the float16 maximum) in magnitude "
            f"on the parity and calibration samples, and become Inf wherever they are computed in float16: "
            f"{shown}{more}. Affected: {', '.join(artifacts)}{gpu}; use fp32 for these or rescale the model")
