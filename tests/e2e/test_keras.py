"""A trained Keras 3 CNN, saved as .keras, through the ONNX hub to TFLite with calibration images."""

from __future__ import annotations

import json

import pytest

from tests.conftest import SAMPLES, artifact, bridge, held_out_images, report

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


def test_validate_a_file_from_tensorflows_own_converter(tmp_path):
    """Artifacts made by other tools get the same verdict: names, layout and mode are read from the file."""
    script = f"""
import pathlib
import numpy as np, tensorflow as tf, keras
from PIL import Image
model = keras.saving.load_model({str(SAMPLES / 'shapes_keras.keras')!r})
images = sorted(pathlib.Path({str(SAMPLES / 'calibration')!r}).glob("*.png"))[:16]  # not the held-out 8

def representative():
    for p in images:
        yield [np.asarray(Image.open(p).convert("RGB"), np.float32)[None] / 255.0]

for name, opt in (("tf_fp32", None), ("tf_fp16", "fp16"), ("tf_int8", "int8")):
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if opt:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if opt == "fp16":
        conv.target_spec.supported_types = [tf.float16]
    if opt == "int8":
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    open(f"{{name}}.tflite", "wb").write(conv.convert())
"""
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, check=True, capture_output=True)
    r = bridge("validate", SAMPLES / "shapes_keras.keras", tmp_path / "tf_fp32.tflite", tmp_path / "tf_fp16.tflite",
               "--report", tmp_path / "report.json")
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    rep = report(tmp_path)
    assert [a["quantization"] for a in rep["artifacts"]] == ["fp32", "fp16"]
    assert rep["artifacts"][0]["parity"]["outputs"]["logits"]["rel_l2"] <= 1e-4
    # TensorFlow's int8 file, calibrated on 16 images, judged on the 8 it never saw.
    held = held_out_images(tmp_path / "held")
    r = bridge("validate", SAMPLES / "shapes_keras.keras", tmp_path / "tf_int8.tflite", "--parity-data", held,
               "--report", tmp_path / "int8.json")
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    int8 = json.loads((tmp_path / "int8.json").read_text())["artifacts"][0]
    assert int8["quantization"] == "int8" and int8["parity"]["status"] == "passed"
    assert int8["parity"]["outputs"]["logits"]["snr_db"] >= 15
