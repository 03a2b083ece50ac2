"""ONNX hub -> Core ML ML Program, one .mlpackage per mode.

Preflight lists every op we cannot lower before anything converts. Each mode gets a freshly built
MIL program (coremltools' pass pipeline edits programs in place), converted at the mode's
deployment target and compute precision, then compressed with coremltools.optimize.coreml.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bridge.activations import activation_ranges
from bridge.converters.base import IO, Binding, LaneArtifact, LaneRequest, Pixels
from bridge.converters.coreml import compress as cm
from bridge.converters.coreml.build import Built, build_program, feature_name
from bridge.converters.coreml.images import METADATA_KEY, channel_last
from bridge.converters.coreml.package import stable_identifiers
from bridge.converters.coreml.passes import apply_passes
from bridge.converters.coreml.preflight import unsupported_ops
from bridge.errors import ConversionError
from bridge.isolation import in_stage
from bridge.lazy import require
from bridge.modes import Mode


def convert(req: LaneRequest) -> list[LaneArtifact]:
    """Entry point of the `coreml-convert` stage. One failing mode never stops the others."""
    onnx = require("onnx")
    # From the hub: coremltools' TensorFlow and torch frontends stay unused (7 s of imports).
    ct = require("coremltools", without=("tensorflow", "torch") if in_stage() else ())
    model = onnx.load(req.hub_path)
    missing = unsupported_ops(model, req.node_names)
    if missing:
        raise ConversionError(f"the Core ML lane refuses {len(missing)} op type(s) or input(s): "
                              + "; ".join(str(u) for u in missing), stage="coreml-preflight",
                              node=missing[0].nodes[0], op_type=missing[0].op_type)
    ranges = None
    if any(cm.MODES[Mode(m)].activations for m in req.modes):
        try:  # on the hub's own graph: the lane's passes below change what its inputs mean
            ranges = activation_ranges(model, req.calibration)
        except ConversionError as e:
            ranges = e
    images = req.options.get("coreml_images") or {}
    last = channel_last(req.framework)
    passes = apply_passes(model, ["image-input-std"], images, last) if images else []

    def make(mode: Mode, target: str):
        hook = None
        if cm.MODES[mode].activations:
            if isinstance(ranges, ConversionError):
                raise ranges
            hook = _quantize_activations(ranges)
        built = build_program(model, getattr(ct.target, target), node_names=req.node_names, after_op=hook,
                              defaults={s.name: s.shape for s in req.inputs}, images=images, channel_last=last)
        mlmodel = ct.convert(built.program, convert_to="mlprogram", compute_precision=precision(mode),
                             minimum_deployment_target=getattr(ct.target, target), skip_model_load=True)
        return mlmodel, _io(req, built, images, last)

    # `bridge validate` feeds pixels from this metadata, for packages made by any run
    metadata = {METADATA_KEY: json.dumps({feature_name(n): p.to_json() for n, p in sorted(images.items())},
                                         sort_keys=True)} if images else {}
    route = ("onnx", *(p.split()[0] for p in passes), "bridge-mil", "coremltools")
    return convert_modes(req, route, make, metadata)


def convert_modes(req: LaneRequest, route: tuple[str, ...], make: Callable, metadata: dict[str, str] | None = None
                  ) -> list[LaneArtifact]:
    """One .mlpackage per mode: `make(mode, deployment_target)` converts (returning the MLModel and
    its IO); then compression, metadata and saving, the same for every route."""
    requested = req.options.get("coreml_target") or cm.DEFAULT_TARGET
    results = []
    for mode_name in req.modes:
        mode = Mode(mode_name)
        start = time.perf_counter()
        target = cm.mode_target(mode, requested)
        art = LaneArtifact(mode=mode.value, route=route)
        art.details["deployment_target"] = target
        if target != requested:
            art.warnings.append(f"{mode}: deployment target raised from {requested} to {target}")
        try:
            mlmodel, io = make(mode, target)
            mlmodel = cm.compress(mlmodel, mode)
            mlmodel.user_defined_metadata.update(metadata or {})
            compressed, per_param = cm.compressed_bytes_per_param(mlmodel._mil_program)
            art.details["compressed_weights"] = {"elements": compressed, "bytes_per_param": per_param,
                                                 "weight_threshold": cm.WEIGHT_THRESHOLD}
            if cm.MODES[mode].compression and not compressed:
                art.warnings.append(f"{mode}: no weight tensor was compressed (none has {cm.WEIGHT_THRESHOLD}+ "
                                    "elements in a shape the mode accepts)")
            path = Path(req.workdir) / f"{req.name}_{mode.value}.mlpackage"
            mlmodel.save(str(path))
            stable_identifiers(path)  # coremltools names items with random UUIDs
            art.path = str(path)
            art.io = io
            if any(s.dtype == "int64" for s in req.inputs):
                art.warnings.append("int64 inputs are int32 in Core ML (its interface has no int64)")
            if any(s.dtype == "float64" for s in req.inputs):
                art.warnings.append("float64 inputs are float32 in Core ML (it computes in float32 at most)")
        except ConversionError as e:
            art.error = {"stage": e.stage or "coreml-convert", "message": str(e), "node": e.node, "op_type": e.op_type}
        except Exception as e:  # noqa: BLE001 - coremltools' passes and compressors raise anything; one mode fails
            text = " ".join(str(e).split())[:400] or type(e).__name__
            art.error = {"stage": "coreml-convert", "message": f"{type(e).__name__}: {text}", "node": None,
                         "op_type": None}
        art.seconds = time.perf_counter() - start
        results.append(art)
    return results


def precision(mode: Mode):
    import coremltools as ct

    return ct.precision.FLOAT32 if cm.MODES[mode].precision == "fp32" else ct.precision.FLOAT16


def _io(req: LaneRequest, built: Built, images: dict[str, Pixels], channel_last: bool) -> IO:
    def shape(s):
        return tuple(-1 if i in s.dynamic else d for i, d in enumerate(s.shape))

    def bind(s) -> Binding:
        name = built.inputs[s.name]
        if s.name not in images:  # a scalar is fed as shape (1,): Core ML has no scalar inputs
            return Binding(s.name, name, shape(s) or (1,), built.dtypes[name])
        perm = (0, 3, 1, 2) if channel_last else None  # Core ML images are channel-first
        nchw = tuple(shape(s)[p] for p in perm) if perm else shape(s)
        return Binding(s.name, name, nchw, "image", perm, "image", pixels=images[s.name])

    inputs = tuple(bind(s) for s in req.inputs)
    outputs = tuple(Binding(s.name, built.outputs[s.name], s.shape, built.dtypes[built.outputs[s.name]])
                    for s in req.outputs)
    return IO(inputs, outputs)


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
