"""ONNX hub -> Core ML ML Program, one .mlpackage per mode.

Preflight lists every op we cannot lower before anything converts. Each mode gets a freshly built
MIL program (coremltools' pass pipeline edits programs in place), converted at the mode's
deployment target and compute precision, then compressed with coremltools.optimize.coreml.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bridge.converters.base import IO, Binding, LaneArtifact, LaneRequest
from bridge.converters.coreml import compress as cm
from bridge.converters.coreml.build import Built, build_program
from bridge.converters.coreml.preflight import unsupported_ops
from bridge.errors import ConversionError
from bridge.lazy import require
from bridge.modes import Mode


def convert(req: LaneRequest) -> list[LaneArtifact]:
    """Entry point of the `coreml-convert` stage. One failing mode never stops the others."""
    onnx = require("onnx")
    ct = require("coremltools")
    model = onnx.load(req.hub_path)
    missing = unsupported_ops(model, req.node_names)
    if missing:
        raise ConversionError(f"{len(missing)} op type(s) have no Core ML converter: "
                              + "; ".join(str(u) for u in missing), stage="coreml-preflight",
                              node=missing[0].nodes[0], op_type=missing[0].op_type)
    requested = req.options.get("coreml_target") or cm.DEFAULT_TARGET
    ranges = None
    results = []
    for mode_name in req.modes:
        mode = Mode(mode_name)
        start = time.perf_counter()
        target = cm.mode_target(mode, requested)
        art = LaneArtifact(mode=mode.value, route=("onnx", "bridge-mil", "coremltools"))
        art.details["deployment_target"] = target
        if target != requested:
            art.warnings.append(f"{mode}: deployment target raised from {requested} to {target}")
        try:
            cfg = cm.MODES[mode]
            hook = None
            if cfg.activations:
                if ranges is None:
                    ranges = activation_ranges(model, req.calibration)
                hook = _quantize_activations(ranges)
            built = build_program(model, getattr(ct.target, target), node_names=req.node_names, after_op=hook,
                                  defaults={s.name: s.shape for s in req.inputs})
            mlmodel = ct.convert(built.program, convert_to="mlprogram",
                                 minimum_deployment_target=getattr(ct.target, target),
                                 compute_precision=ct.precision.FLOAT32 if cfg.precision == "fp32"
                                 else ct.precision.FLOAT16, skip_model_load=True)
            mlmodel = cm.compress(mlmodel, mode)
            compressed, per_param = cm.compressed_bytes_per_param(mlmodel._mil_program)
            art.details["compressed_weights"] = {"elements": compressed, "bytes_per_param": per_param,
                                                 "weight_threshold": cm.WEIGHT_THRESHOLD}
            if cfg.compression and not compressed:
                art.warnings.append(f"{mode}: no weight tensor was compressed (none has {cm.WEIGHT_THRESHOLD}+ "
                                    "elements in a shape the mode accepts)")
            path = Path(req.workdir) / f"{req.name}_{mode.value}.mlpackage"
            mlmodel.save(str(path))
            art.path = str(path)
            art.io = _io(req, built)
            if any(s.dtype == "int64" for s in req.inputs):
                art.warnings.append("int64 inputs are int32 in Core ML (its interface has no int64)")
        except ConversionError as e:
            art.error = {"stage": e.stage or "coreml-convert", "message": str(e), "node": e.node, "op_type": e.op_type}
        except Exception as e:  # noqa: BLE001 - coremltools' passes and compressors raise anything; one mode fails
            text = " ".join(str(e).split())[:400] or type(e).__name__
            art.error = {"stage": "coreml-convert", "message": f"{type(e).__name__}: {text}", "node": None,
                         "op_type": None}
        art.seconds = time.perf_counter() - start
        results.append(art)
    return results


def _io(req: LaneRequest, built: Built) -> IO:
    def shape(s):
        return tuple(-1 if i in s.dynamic else d for i, d in enumerate(s.shape))

    inputs = tuple(Binding(s.name, built.inputs[s.name], shape(s), built.dtypes[built.inputs[s.name]])
                   for s in req.inputs)
    outputs = tuple(Binding(s.name, built.outputs[s.name], s.shape, built.dtypes[built.outputs[s.name]])
                    for s in req.outputs)
    return IO(inputs, outputs)


def activation_ranges(model, calibration) -> dict[str, tuple[float, float]]:
    """Min/max of every float tensor over the calibration samples, from onnxruntime on the hub
    (coremltools' own activation calibration calls `predict`, which exists only on macOS)."""
    import onnx

    ort = require("onnxruntime")
    if not calibration:
        raise ConversionError("int8 needs calibration samples", stage="coreml-convert")
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
    for feed in calibration:
        for name, value in zip(names, session.run(names, feed), strict=True):
            if value.dtype != np.float32 or value.size == 0:
                continue
            lo[name] = min(lo.get(name, np.inf), float(value.min()))
            hi[name] = max(hi.get(name, -np.inf), float(value.max()))
    return {n: (lo[n], hi[n]) for n in lo}


def _quantize_activations(ranges: dict[str, tuple[float, float]]):
    """After each node: its float outputs pass through a quantize/dequantize pair (symmetric int8,
    scale from the calibrated range), the form Core ML's int8 activation kernels take."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    def hook(ctx, node) -> None:
        for i, name in enumerate(node.output):
            value = ctx.values.get(name)
            if name not in ranges or isinstance(value, np.ndarray) or getattr(value, "val", None) is not None:
                continue
            if getattr(value, "dtype", None) != types.fp32:
                continue
            lo, hi = ranges[name]
            scale = np.float32(max(abs(lo), abs(hi), 1e-8) / 127.0)
            q = mb.quantize(input=value, scale=scale, zero_point=np.int8(0), output_dtype="int8",
                            name=f"{ctx.name(node, i)}_q")
            ctx.set(name, mb.dequantize(input=q, scale=scale, zero_point=np.int8(0), name=f"{ctx.name(node, i)}_dq"))

    return hook
