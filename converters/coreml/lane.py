"""ONNX hub -> Core ML ML Program, one .mlpackage per mode.

The lane's preflight (`preflight.py`) has named every op we cannot lower before this runs; int8
quantizes activations with the ranges the hub measured on calibration data. Each mode gets a freshly built
MIL program (coremltools' pass pipeline edits programs in place), converted at the mode's
deployment target and compute precision, then compressed with coremltools.optimize.coreml.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bridge.base.bindings import IO, PIXELS_METADATA_KEY, Binding, Pixels
from bridge.base.errors import ConversionError
from bridge.base.files import open_modes
from bridge.base.lane import MIXED_BASE, LaneArtifact, LaneRequest, for_each_mode
from bridge.base.lazy import require
from bridge.converters.coreml import CoreMLOptions
from bridge.converters.coreml import compress as cm
from bridge.converters.coreml.build import Built, build_program, feature_name
from bridge.converters.coreml.images import channel_last, image_inputs
from bridge.converters.coreml.package import deterministic_spec, stable_identifiers
from bridge.converters.coreml.passes import apply_passes
from bridge.converters.onnx.graph import named_layers


def convert(req: LaneRequest) -> list[LaneArtifact]:
    """Entry point of the `coreml-convert` stage (after the lane's preflight). One failing mode never
    stops the others."""
    onnx = require("onnx")
    ct = require("coremltools")
    model = onnx.load(req.hub_path)
    options: CoreMLOptions = req.options
    last = channel_last(req.framework)
    images = image_inputs(req.inputs, req.framework, req.mean, req.std) if options.image_input else {}
    passes = apply_passes(model, ["image-input-std"], images, last) if images else []
    kept = named_layers(options.keep, model, req.node_names, "--coreml-keep", "coreml-convert")
    bases: dict[str, dict] = {}  # mode -> what `remix` reads, when this is a mixed search's first step

    def make(mode: str, target: str):
        hook = None
        if cm.CONFIG[mode].activations:
            if not req.ranges:
                raise ConversionError(f"{mode} needs the hub's activation ranges on calibration data",
                                      stage="coreml-convert")
            hook = _quantize_activations(req.ranges)  # int8-mixed: the kept layers are cut out afterwards
        built = build_program(model, getattr(ct.target, target), node_names=req.node_names, after_op=hook,
                              defaults={s.name: s.shape for s in req.inputs}, images=images, channel_last=last)
        compute = precision(mode)
        mixed = cm.SPECS[mode].mixed
        if mixed == "fp16":
            compute = _mixed_precision(built, kept)
        mlmodel = ct.convert(built.program, convert_to="mlprogram", compute_precision=compute,
                             minimum_deployment_target=getattr(ct.target, target), skip_model_load=True)
        weights = _kept_weights(mlmodel, built, kept) if mixed == "fp16" else frozenset()
        if mixed == "int8":
            bases[mode] = _remix_base(req, mode, mlmodel, built)
        return mlmodel, _io(req, built, images, last), weights

    # `bridge validate` feeds pixels from this metadata, for packages made by any run
    metadata = {PIXELS_METADATA_KEY: json.dumps({feature_name(n): p.to_json() for n, p in sorted(images.items())},
                                                sort_keys=True)} if images else {}
    route = ("onnx", *(p.split()[0] for p in passes), "bridge-mil", "coremltools")
    arts = convert_modes(req, route, make, metadata)
    for art in arts:
        mixed = cm.SPECS[art.mode].mixed
        if art.error is None and mixed:
            art.details["kept_layers"] = list(kept.values())
            if mixed == "fp16":  # int8-mixed: said by `remix`
                art.details["kept_precision"] = "float32"
        if art.error is None and art.mode in bases:
            shutil.copytree(art.path, bases[art.mode]["int8"], dirs_exist_ok=True)
            if kept:
                _keep_layers(art, bases[art.mode], kept, req.node_names, options.keep_weights)
            else:
                art.details[MIXED_BASE] = bases[art.mode]
                art.warnings.extend(cm.uncompressed_warning(art.mode, art.details["compressed_weights"]["elements"],
                                                            False))
    return arts


def _keep_layers(art: LaneArtifact, base: dict, kept: dict[str, str], node_names: dict[str, str],
                 weights: bool) -> None:
    """`int8-mixed` with layers kept: the W8A8 package just made, edited as the search's later steps
    are (`remix`), not converted with those layers left out. Converting them out lets coremltools fuse
    a kept Conv with a reader left in int8 (no quantize pair between them any more), and the fused
    op's weights, renamed, were then compressed anyway (11 of 16 kept Convs on PP-OCRv4 det)."""
    from bridge.converters.coreml.remix import remix

    made = remix(base, tuple((hub,) for hub in kept), node_names, art.path, weights)
    art.details.update(made.details)
    art.warnings.extend(made.warnings)


def _remix_base(req: LaneRequest, mode: str, mlmodel, built: Built) -> dict:
    """What `remix.remix` cuts the search's later steps from: the program before weight compression
    (saved here; the W8A8 package is copied next to it once saved) and the ops each hub node made;
    `units`: every layer the search may keep (`bridge.base.lane.MIXED_BASE`)."""
    folder = Path(req.workdir)
    uncompressed = folder / f"{req.name}_{mode}.float16.mlpackage"
    mlmodel.save(str(uncompressed))
    layers = folder / f"{req.name}_{mode}.layers.json"
    layers.write_text(json.dumps({node: list(ops) for node, ops in built.layers.items()}))
    return {"mode": mode, "int8": str(folder / f"{req.name}_{mode}.base.mlpackage"), "float": str(uncompressed),
            "layers": str(layers), "units": list(built.layers)}


def _kept_weights(mlmodel, built: Built, kept: dict[str, str]) -> frozenset[str]:
    """The weight constants of the kept layers in the converted program, by name: coremltools' fp16
    pass renames a constant `w` to `w_to_fp16` and keeps every other name, so each is found from the
    ops our builder made for the layer (`built.layers`)."""
    made = {op for layer in kept for op in built.layers.get(layer, ())}
    found = set()
    for op in mlmodel._mil_program.functions["main"].operations:
        if op.op_type == "const" and op.name.removesuffix("_to_fp16") in made:
            found.add(op.name)
    return frozenset(found)


def _mixed_precision(built: Built, kept: dict[str, str]):
    """fp16 compute except the kept layers' ops. The casts go in before coremltools' own passes
    (which then convert in fp32): its fusions see the precision boundaries and never fold a kept
    op into an fp16 neighbour (a Conv followed by a scale would otherwise become one fp16 conv
    named after the scale)."""
    import coremltools as ct

    ops = {op for layer in kept for op in built.layers.get(layer, ())}
    ct.transform.FP16ComputePrecision(op_selector=lambda op: op.name not in ops).apply(built.program)
    return ct.precision.FLOAT32


def convert_modes(req: LaneRequest, route: tuple[str, ...], make: Callable, metadata: dict[str, str] | None = None
                  ) -> list[LaneArtifact]:
    """One .mlpackage per mode: `make(mode, deployment_target)` converts (returning the MLModel, its
    IO and the weight constants compression leaves alone); then compression, metadata and saving,
    the same for every route."""
    requested = req.options.target or cm.DEFAULT_TARGET

    def one(mode: str, art: LaneArtifact) -> None:
        target = cm.mode_target(mode, requested)
        art.details["deployment_target"] = target
        if target != requested:
            art.warnings.append(f"{mode}: deployment target raised from {requested} to {target}")
        mlmodel, io, keep = make(mode, target)
        mlmodel = cm.compress(mlmodel, mode, target, keep=keep)
        _note_palettes(mode, target, art, mlmodel._mil_program)
        mlmodel.user_defined_metadata.update(metadata or {})
        compressed, per_param = cm.compressed_bytes_per_param(mlmodel._mil_program)
        art.details["compressed_weights"] = {"elements": compressed, "bytes_per_param": per_param,
                                             "weight_threshold": cm.WEIGHT_THRESHOLD}
        if keep:
            art.details["kept_weights"] = sorted(keep)
        if cm.SPECS[mode].mixed != "int8":  # int8-mixed: said once its layers are kept (`_keep_layers`)
            art.warnings.extend(cm.uncompressed_warning(mode, compressed, bool(keep)))
        path = Path(req.workdir) / f"{req.name}_{mode}.mlpackage"
        mlmodel.save(str(path))
        deterministic_spec(path)  # protobuf 7 writes map fields in a varying order
        stable_identifiers(path)  # coremltools names items with random UUIDs
        open_modes(path)  # coremltools writes the spec 0600 and its folders 0700: the artifact is for everyone
        art.path = str(path)
        art.io = io
        if any(s.dtype == "int64" for s in req.inputs):
            art.warnings.append("int64 inputs are int32 in Core ML (its interface has no int64)")
        if any(s.dtype == "float64" for s in req.inputs):
            art.warnings.append("float64 inputs are float32 in Core ML (it computes in float32 at most)")

    return for_each_mode(req.modes, one, stage="coreml-convert", route=route)


def _note_palettes(mode: str, target: str, art: LaneArtifact, program) -> None:
    """Record how a palettized mode's tables are grouped and which weights it kept at 8 bits, and say
    when the target kept the tables coarse."""
    cfg = cm.CONFIG[mode]
    if cfg.compression != "palettize":
        return
    groups = cm.palette_groups(mode, target)
    wider = cm.int8_ops(mode, target)
    int8 = cm.int8_weights(program) if wider else []
    art.details["palettes"] = {"granularity": "per_grouped_channel" if groups else "per_tensor", "group_size": groups,
                               "int8_ops": list(wider), "int8_weights": int8}
    if int8:  # the mode is not 4 bits throughout: say so where the user reads
        art.warnings.append(f"{mode}: {len(int8)} weight(s) of {'/'.join(wider)} layers kept at 8 bits (int8 per "
                            f"channel): 4-bit tables there fail transformers; the report's palettes.int8_weights "
                            "names them")
    if cfg.group_size and not groups:
        art.warnings.append(f"{mode}: one look-up table per tensor at {target}; grouped tables (one per "
                            f"{cfg.group_size} output channels, more accurate) need --coreml-target "
                            f"{cm.GROUPED_TARGET} or newer")


def precision(mode: str):
    import coremltools as ct

    return ct.precision.FLOAT32 if cm.CONFIG[mode].precision == "fp32" else ct.precision.FLOAT16


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


def _quantize_activations(ranges: dict[str, tuple[float, float]], skip: set[str] = frozenset()):
    """After each node but those in `skip`: its float outputs pass through a quantize/dequantize pair
    (symmetric int8, scale from the calibrated range), the form Core ML's int8 activation kernels
    take. (`int8-mixed` quantizes every node and cuts its kept layers out afterwards, `remix`;
    tests convert with `skip` to check that cut against a program that never quantized them.)"""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    def hook(ctx, node) -> None:
        if node.name in skip:
            return
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
