"""The TFLite lane's modes table: one row per mode, and how each is made from the one float32 file
onnx2tf writes (`ModeConfig`).

Adding a mode is one row here (and, for a new kind of file, its maker in `lane._make`)."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.base.modes import FP16_PARITY, FP32_PARITY, FULL_INT, WEIGHT_ONLY, Mode, ModeSpec


@dataclass(frozen=True)
class ModeConfig:
    make: str  # float | fp16-weights | dynamic-range | calibrated
    activations: str | None = None  # calibrated modes: int8 | int16
    integer_io: bool = False
    # Kernels that may stay float where an op has no integer one. int8 tries without first and
    # warns when it needed them; int16x8 admits them from the start (few ops have int16 kernels).
    float_fallback: bool = False
    # Integer biases absorb the mean error of the int8 weights' rounding, measured on the
    # calibration samples (`bias.InputMeans`). int16x8 only: the int8 modes stay TensorFlow's files.
    bias_correction: bool = False


MODES = (
    ModeSpec(Mode.FP32, FP32_PARITY, config=ModeConfig("float"), description="float32"),
    # float16 weights behind DEQUANTIZE: CPU kernels compute in fp32, GPU delegates in fp16, so it is
    # checked as fp16. Constants float16 cannot hold stay float32 in the file (`fp16.float16_weights`).
    ModeSpec(Mode.FP16, FP16_PARITY, fp16_compute=True, keeps_fp16_constants=True,
             config=ModeConfig("fp16-weights"), description="float16 weights"),
    ModeSpec(Mode.DYNAMIC_INT8, WEIGHT_ONLY, config=ModeConfig("dynamic-range"),
             description="int8 weights, activations quantized at run time, no calibration"),
    ModeSpec(Mode.INT8, FULL_INT, calibrated=True, config=ModeConfig("calibrated", activations="int8"),
             description="int8 weights and activations, calibrated, float I/O"),
    ModeSpec(Mode.INT8_MIXED, FULL_INT, calibrated=True, needs_ranges=True, mixed="int8",
             config=ModeConfig("calibrated", activations="int8"),
             description="as int8, with the layers --tflite-keep names computing in float32"),
    ModeSpec(Mode.INT8_IO, FULL_INT, calibrated=True,
             config=ModeConfig("calibrated", activations="int8", integer_io=True),
             description="as int8, with int8 model inputs and outputs"),
    ModeSpec(Mode.INT16X8, WEIGHT_ONLY, calibrated=True,
             config=ModeConfig("calibrated", activations="int16", float_fallback=True, bias_correction=True),
             description="int16 activations, int8 weights, calibrated, float I/O"),
)


def config(mode: str) -> ModeConfig:
    """A mode's row, by name (the quantizer's child process gets the name only)."""
    for spec in MODES:
        if spec.name == mode:
            return spec.config
    raise KeyError(mode)
