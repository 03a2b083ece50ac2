"""Target lanes: which modes each target offers and where its converter and runner live.

This module is data only (no framework imports): the orchestrator plans from it in the parent
process and runs `convert` / the runner in child processes by their dotted paths.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.modes import Mode


@dataclass(frozen=True)
class Lane:
    target: str
    modes: tuple[Mode, ...]
    default: tuple[Mode, ...]
    convert: str | None  # "module:function" run in a child; None: the hub itself is the artifact
    runner: str  # "module:Class" of the runtime that executes this lane's artifacts
    extra: str  # the pip extra that installs the lane
    suffix: str


LANES: dict[str, Lane] = {
    "onnx": Lane(
        target="onnx",
        modes=(Mode.FP32,),
        default=(Mode.FP32,),
        convert=None,
        runner="bridge.validators.runners.onnxruntime:OnnxRuntimeRunner",
        extra="onnx",
        suffix=".onnx",
    ),
    "tflite": Lane(
        target="tflite",
        modes=(Mode.FP32, Mode.FP16, Mode.DYNAMIC_INT8, Mode.INT8, Mode.INT8_IO, Mode.INT16X8),
        default=(Mode.FP32,),
        convert="bridge.converters.tflite.lane:convert",
        runner="bridge.validators.runners.tflite:TFLiteRunner",
        extra="tflite",
        suffix=".tflite",
    ),
    "coreml": Lane(
        target="coreml",
        modes=(Mode.FP32, Mode.FP16, Mode.INT8_WEIGHTS, Mode.INT8, Mode.PALETTIZE_8, Mode.PALETTIZE_6,
               Mode.PALETTIZE_4, Mode.INT4_WEIGHTS),
        default=(Mode.FP16,),
        convert="bridge.converters.coreml.lane:convert",
        runner="bridge.validators.runners.coreml:CoreMLRunner",
        extra="coreml",
        suffix=".mlpackage",
    ),
}
