"""One TFLiteConverter configuration per mode. Quantization modes are data: `MODES` says, for each
mode, which optimizations, kernels and I/O types the converter gets."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bridge.modes import Mode


@dataclass(frozen=True)
class ModeConfig:
    optimize: bool = False
    float16: bool = False
    calibrated: bool = False
    ops: str = "builtins"  # builtins | int8 | int16x8
    integer_io: bool = False
    # Kernels that may stay float when a full-integer conversion cannot quantize an op; the
    # report warns when this fallback was needed.
    float_fallback: bool = False


MODES: dict[Mode, ModeConfig] = {
    Mode.FP32: ModeConfig(),
    Mode.FP16: ModeConfig(optimize=True, float16=True),
    Mode.DYNAMIC_INT8: ModeConfig(optimize=True),
    Mode.INT8: ModeConfig(optimize=True, calibrated=True, ops="int8"),
    Mode.INT8_IO: ModeConfig(optimize=True, calibrated=True, ops="int8", integer_io=True),
    Mode.INT16X8: ModeConfig(optimize=True, calibrated=True, ops="int16x8", float_fallback=True),
}


def make_converter(tf, concrete_fn, holder, cfg: ModeConfig, representative: Callable[[], Iterable],
                   *, allow_select: bool, allow_float: bool):
    """A TFLiteConverter for one mode. `allow_select` admits Flex ops (listed and refused later
    unless --allow-flex); `allow_float` admits float kernels in full-integer modes."""
    conv = tf.lite.TFLiteConverter.from_concrete_functions([concrete_fn], holder)
    ops = {
        "builtins": [tf.lite.OpsSet.TFLITE_BUILTINS],
        "int8": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8],
        "int16x8": [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8],
    }[cfg.ops]
    if allow_float and cfg.ops != "builtins":
        ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
    if allow_select:
        ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
    conv.target_spec.supported_ops = ops
    if cfg.optimize:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if cfg.float16:
        conv.target_spec.supported_types = [tf.float16]
    if cfg.calibrated:
        conv.representative_dataset = representative
    if cfg.integer_io:
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return conv
