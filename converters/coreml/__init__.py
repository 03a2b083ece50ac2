"""The Core ML lane: hub ONNX -> MIL program (our op converters) -> ML Program .mlpackage files,
one per compression mode. coremltools has no ONNX frontend since 6.0; this is ours.

This module is the lane's declaration (registered in pyproject.toml's `bridge.lanes` entry points):
data and paths only, no framework import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from bridge.base.errors import UsageError
from bridge.base.lane import Lane, LaneCheck, Widen, option
from bridge.base.sources import Format
from bridge.converters.coreml.compress import DEFAULT_TARGET, MODES, TARGETS, target_index


class Route(StrEnum):
    onnx = "onnx"
    direct = "direct"


@dataclass(frozen=True)
class CoreMLOptions:
    target: str | None = field(default=None, metadata=option(
        f"Core ML deployment target, {TARGETS[0]}..{TARGETS[-1]} (default {DEFAULT_TARGET}; raised per mode when a "
        "mode needs newer)."))
    image_input: bool = field(default=False, metadata=option(
        "Core ML image inputs take 0-255 pixels (ImageType): scale 1/255, then --mean and --std."))
    route: Route = field(default=Route.onnx, metadata=option(
        "onnx: our converter from the ONNX hub (every source); direct: coremltools' own PyTorch/TensorFlow "
        "frontends, for comparison."))
    keep: str | None = field(default=None, metadata=option(
        "fp16-mixed / int8-mixed: comma-separated layers (node names as in the source or the ONNX hub) kept in "
        "float32 (fp16-mixed; the rest computes in float16) or with float16 activations (int8-mixed; the rest is "
        "int8; their weights stay int8 unless --coreml-keep-weights)."))
    keep_weights: bool = field(default=False, metadata=option(
        "int8-mixed: the --coreml-keep layers' weights float16 too (default: int8, only their activations "
        "float16)."))


DIRECT_FORMATS = (Format.PYTHON, Format.TORCHSCRIPT, Format.TORCH_EXPORT, Format.TORCH_PICKLE, Format.KERAS,
                  Format.H5)


def check(plan: LaneCheck) -> None:
    """Combinations the lane cannot honour, refused before anything runs."""
    options: CoreMLOptions = plan.options
    specs = {m.name: m for m in MODES}
    if options.target is not None:
        if options.target not in TARGETS:
            raise UsageError(f"--coreml-target {options.target}: valid targets are {', '.join(TARGETS)}")
        for mode in plan.modes:
            need = specs[mode].min_target
            if need and target_index(need) > target_index(options.target):
                raise UsageError(f"coreml mode {mode} needs --coreml-target {need} or newer, not {options.target}")
    mixed = sorted(m for m in plan.modes if specs[m].mixed)
    if options.keep and not mixed:
        raise UsageError("--coreml-keep names the layers a mixed mode keeps in higher precision: "
                         "add --quantize coreml=fp16-mixed or coreml=int8-mixed")
    if options.keep_weights and not (options.keep and "int8-mixed" in mixed):
        raise UsageError("--coreml-keep-weights gives the layers --coreml-keep names in int8-mixed float16 weights: "
                         "add --coreml-keep and --quantize coreml=int8-mixed")
    if options.route == Route.direct:
        if mixed:
            raise UsageError(f"--coreml-route direct: coreml {', '.join(mixed)} chooses each layer's precision in "
                             "our MIL builder; drop --coreml-route direct")
        if plan.source.format not in DIRECT_FORMATS:
            raise UsageError(f"--coreml-route direct: coremltools has no frontend for a {plan.source.format} source "
                             "(it reads PyTorch and TensorFlow/Keras models; ONNX takes the default route)")
        calibrated = sorted(m for m in plan.modes if specs[m].calibrated)
        if calibrated:
            raise UsageError(f"--coreml-route direct: coreml {', '.join(calibrated)} quantizes activations with "
                             "ranges only the ONNX route can calibrate on Linux")
        if options.image_input:
            raise UsageError("--coreml-image-input is built by the ONNX route; drop --coreml-route direct")


def is_package(path: Path) -> bool:
    return path.is_dir() and (path / "Manifest.json").is_file() and (path / "Data").is_dir()


# Converting from the hub and running packages need none of the frameworks coremltools imports
# only to probe for them (7-8 s of a child's start).
_PROBED = ("tensorflow", "torch")

LANE = Lane(
    name="coreml",
    suffix=".mlpackage",
    modes=MODES,
    default=("fp16",),
    convert="bridge.converters.coreml.lane:convert",
    variants={"direct": "bridge.converters.coreml.direct:convert"},
    select=lambda options: "direct" if options.route == Route.direct else None,
    runner="bridge.validators.runners.coreml:CoreMLRunner",
    tracer="bridge.validators.runners.coreml:CoreMLTracer",
    describe="bridge.validators.runners.coreml:describe",
    preflight="bridge.converters.coreml.preflight:unsupported",
    remix="bridge.converters.coreml.remix:remix",
    widen=Widen("float16_weights", tier=True),
    recognize=is_package,
    options=CoreMLOptions,
    check=check,
    pixel_inputs=lambda options: options.image_input,
    convert_blocks=_PROBED,
    runtime_blocks=(*_PROBED, "sklearn"),
    notes={"fp16-constants": "Core ML computes the ops reading them in fp32"},
    requires=("coremltools", "sklearn"),
    extra="coreml",
)
