"""The TFLite lane: hub ONNX -> onnx2tf 2.x `flatbuffer_direct` -> one float32 .tflite file, and every
mode made from that file without TensorFlow (`lane.py`).

This module is the lane's declaration (registered in pyproject.toml's `bridge.lanes` entry points):
data and paths only, no framework import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from bridge.base.errors import UsageError
from bridge.base.lane import Lane, LaneCheck, Widen, option
from bridge.converters.tflite.modes import MODES


class Layout(StrEnum):
    nhwc = "nhwc"
    source = "source"


@dataclass(frozen=True)
class TFLiteOptions:
    layout: Layout = field(default=Layout.nhwc, metadata=option(
        "Layout of 4-D image inputs in TFLite files: nhwc (what Android camera pipelines feed) or source."))
    allow_flex: bool = field(default=False, metadata=option(
        "Ship TFLite files that need Flex (Select TF) ops.", flag="--allow-flex"))
    keep: str | None = field(default=None, metadata=option(
        "int8-mixed: comma-separated layers (node names as in the source or the ONNX hub) computing in float32; "
        "the rest is int8."))


def is_tflite(path: Path) -> bool:
    """A TFLite flatbuffer carries the identifier TFL3 at bytes 4-8."""
    try:
        with path.open("rb") as f:
            return path.is_file() and f.read(8)[4:8] == b"TFL3"
    except OSError:
        return False


def check(plan: LaneCheck) -> None:
    options: TFLiteOptions = plan.options
    if options.keep and not any(m.name in plan.modes and m.mixed for m in MODES):
        raise UsageError("--tflite-keep names the layers a mixed mode keeps in float32: "
                         "add --quantize tflite=int8-mixed")


LANE = Lane(
    name="tflite",
    suffix=".tflite",
    modes=MODES,
    default=("fp32",),
    convert="bridge.converters.tflite.lane:convert",
    runner="bridge.validators.runners.tflite:TFLiteRunner",
    tracer="bridge.validators.runners.tflite:TFLiteTracer",
    describe="bridge.validators.runners.tflite:describe",
    preflight="bridge.converters.tflite.preflight:unsupported",
    remix="bridge.converters.tflite.lane:remix",
    widen=Widen("all_readers", second="float32_weights"),
    inspect_preflight="bridge.converters.tflite.preflight:unsupported_all",
    recognize=is_tflite,
    options=TFLiteOptions,
    check=check,
    notes={"fp16-activations": "TFLite runs fp16 files in fp32 on CPU, in fp16 on GPU delegates",
           "fp16-constants": "TFLite's fp16 files keep them in float32"},
    requires=("onnx2tf", "ai_edge_litert", "flatbuffers"),  # no TensorFlow: onnx2tf 2.x writes the files
    extra="tflite",
    # measured (child's peak RSS): ResNet50 (102 MB hub) converts at 1055 MiB, all-MiniLM-L6-v2
    # (90 MB) at 983 MiB, PP-OCRv4 det (4.7 MB) at 194 MiB; ResNet50's files run at 0.3 GB
    convert_memory=(192 << 20, 9.5),
    runtime_memory=(128 << 20, 2.0),
    # what its conversion child imports (~1 s; an idle child holding them: 111 MB RSS)
    convert_preload=("onnx", "onnx2tf", "onnx2tf.tflite_builder.lower_from_onnx2tf", "bridge.lanes",
                     "bridge.converters.tflite.lane"),
    convert_preload_memory=128 << 20,
    # what its runtime child imports (~0.2 s; an idle child holding them: 35 MB RSS)
    runtime_preload=("bridge.validators.runners", "bridge.validators.runners.tflite", "ai_edge_litert.interpreter"),
    runtime_preload_memory=48 << 20,
)
