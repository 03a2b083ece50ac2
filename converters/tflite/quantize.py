"""One TFLiteConverter configuration per mode, from the mode's `ModeConfig` (`modes.py`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from bridge.converters.tflite.modes import ModeConfig


def make_converter(tf, concrete_fn, holder, cfg: ModeConfig, representative: Callable[[], Iterable] | None,
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
    if representative is not None:  # calibrated modes
        conv.representative_dataset = representative
    if cfg.integer_io:
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return conv
