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

    def filename(self, stem: str, mode: Mode) -> str:
        """What an artifact is called in --out: known before anything converts, so a run that
        would overwrite a user's file is refused up front."""
        return f"{stem}{self.suffix}" if self.convert is None else f"{stem}_{mode.value}{self.suffix}"

    def files(self, stem: str, mode: Mode) -> list[str]:
        """Every file the artifact may ship (an ONNX file over 2 GB carries `<name>.data`)."""
        name = self.filename(stem, mode)
        return [name, f"{name}.data"] if self.suffix == ".onnx" else [name]


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
