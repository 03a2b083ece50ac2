"""fp16 weights, float32 compute: the rewrite of onnx2tf's float32 file, run on ai-edge-litert."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.converters.tflite.flatbuffer import op_counts
from bridge.converters.tflite.fp16 import float16_weights
from tests.converters.tflite.helpers import (
    cnn,
    constant_bytes,
    constant_types,
    images,
    run,
    snr_db,
    tensor_types,
    to_tflite,
)


def _pair(tmp_path, model):
    fp32 = to_tflite(model, tmp_path)
    fp16 = tmp_path / "fp16.tflite"
    fp16.write_bytes(float16_weights(fp32.read_bytes()))
    return fp32, fp16


def test_weights_stored_in_float16_and_computed_in_float32(tmp_path):
    fp32, fp16 = _pair(tmp_path, cnn())
    halves = tensor_types(fp16).get("FLOAT16", 0)
    assert halves == 8 and op_counts(fp16.read_bytes())["DEQUANTIZE"] == halves  # weights, biases, scalars
    assert constant_bytes(fp16) == pytest.approx(constant_bytes(fp32) / 2, rel=0.02)
    inputs = images(4)
    reference, got = run(fp32, inputs), run(fp16, inputs)
    assert got.dtype == np.float32  # I/O and activations stay float32: stock CPU kernels run it
    assert 50 < snr_db(got, reference) < 100, "float16 weights: close to fp32, but not the fp32 file"


def test_constants_float16_cannot_hold_stay_float32(tmp_path):
    """1e5 would be stored as 65504 (TensorFlow clamps it: the output scaled by 0.655, 9.3 dB) and
    1e-12 as 0; both stay float32, so the file keeps the fp32 file's numbers."""
    fp32, fp16 = _pair(tmp_path, cnn(gain=1e5, epsilon=1e-12))
    kept = {name: kind for name, kind in constant_types(fp16).items() if name in ("gain", "eps")}
    assert kept == {"gain": "FLOAT32", "eps": "FLOAT32"}
    inputs = images(4)
    reference, got = run(fp32, inputs), run(fp16, inputs)
    assert snr_db(got, reference) > 50
    clamped = reference * (65504 / 1e5)
    assert snr_db(clamped, reference) < 10  # what clamping would have cost


def test_rewrite_is_deterministic(tmp_path):
    fp32, fp16 = _pair(tmp_path, cnn())
    assert float16_weights(fp32.read_bytes()) == fp16.read_bytes()
