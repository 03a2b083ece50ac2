"""A trained Keras 3 CNN, saved as .keras, through the ONNX hub to TFLite with calibration images."""

from __future__ import annotations

import pytest

from tests.conftest import SAMPLES, artifact, bridge, report

pytestmark = pytest.mark.slow


def test_keras_file_to_tflite_with_calibration(tmp_path):
    """samples/shapes_keras.keras is trained (95% held-out accuracy, samples/train_shapes_keras.py)."""
    path = SAMPLES / "shapes_keras.keras"
    out = tmp_path / "out"
    r = bridge("convert", path, "--target", "onnx", "--target", "tflite", "--quantize", "tflite=fp32,fp16,int8",
               "--calibration", SAMPLES / "calibration", "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = report(out)
    assert rep["source"]["framework"] == "keras" and rep["source"]["format"] == "keras"
    assert rep["source"]["inputs"][0] == {"name": "image", "shape": [1, 64, 64, 3], "dtype": "float32"}
    tfl = artifact(rep, "tflite", "fp32")
    # Keras is already NHWC: no transposition, and onnx2tf must not add one.
    assert tfl["io"]["inputs"][0]["shape"] == [1, 64, 64, 3] and tfl["io"]["inputs"][0]["permutation"] is None
    assert tfl["parity"]["outputs"]["logits"]["rel_l2"] <= 1e-4
    assert artifact(rep, "tflite", "fp16")["parity"]["outputs"]["logits"]["snr_db"] >= 30
    int8 = artifact(rep, "tflite", "int8")["parity"]["outputs"]["logits"]
    assert int8["snr_db"] >= 15 and int8["cosine"] >= 0.98
