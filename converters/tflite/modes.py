"""The TFLite lane's modes table: one row per mode, each with its TFLiteConverter settings.

Adding a mode is one row here (and its converter settings in `ModeConfig`)."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.base.modes import FP16_PARITY, FP32_PARITY, FULL_INT, WEIGHT_ONLY, Mode, ModeSpec


@dataclass(frozen=True)
class ModeConfig:
    optimize: bool = False
    float16: bool = False
    ops: str = "builtins"  # builtins | int8 | int16x8
    integer_io: bool = False
    # Kernels that may stay float when a full-integer conversion cannot quantize an op; the
    # report warns when this fallback was needed.
    float_fallback: bool = False


MODES = (
    ModeSpec(Mode.FP32, FP32_PARITY, config=ModeConfig(), description="float32"),
    # fp16 files compute in fp32 on CPU kernels but in fp16 on GPU delegates: checked as fp16.
    ModeSpec(Mode.FP16, FP16_PARITY, fp16_compute=True, clamps_fp16_constants=True,
             config=ModeConfig(optimize=True, float16=True),
             description="float16 weights"),
    ModeSpec(Mode.DYNAMIC_INT8, WEIGHT_ONLY, config=ModeConfig(optimize=True),
             description="int8 weights, activations quantized at run time, no calibration"),
    ModeSpec(Mode.INT8, FULL_INT, calibrated=True, config=ModeConfig(optimize=True, ops="int8"),
             description="int8 weights and activations, calibrated, float I/O"),
    ModeSpec(Mode.INT8_IO, FULL_INT, calibrated=True, config=ModeConfig(optimize=True, ops="int8", integer_io=True),
             description="as int8, with int8 model inputs and outputs"),
    ModeSpec(Mode.INT16X8, WEIGHT_ONLY, calibrated=True,
             config=ModeConfig(optimize=True, ops="int16x8", float_fallback=True),
             description="int16 activations, int8 weights, calibrated, float I/O"),
)
