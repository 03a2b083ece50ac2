"""`--coreml-image-input`: Core ML files take 0-255 pixels; parity feeds each artifact its own units."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import SAMPLES, artifact, bridge, report, write_module

pytestmark = pytest.mark.slow

MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)  # std differs per channel: the model divides by it


def test_torch_image_input_takes_pixels_and_validates(tmp_path):
    pytest.importorskip("coremltools")
    out = tmp_path / "out"
    r = bridge("convert", f"{SAMPLES}/shapes_cnn.py:load", "--target", "tflite", "--target", "coreml",
               "--quantize", "coreml=fp32,fp16", "--coreml-image-input", "--mean", ",".join(map(str, MEAN)),
               "--std", ",".join(map(str, STD)), "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = report(out)
    fp32 = artifact(rep, "coreml", "fp32")
    assert fp32["route"] == ["onnx", "image-input-std", "bridge-mil", "coremltools"]
    x = fp32["io"]["inputs"][0]
    assert x["dtype"] == "image" and x["shape"] == [1, 3, 64, 64]
    assert x["pixels"] == {"scale": 1 / 255, "mean": list(MEAN), "std": list(STD), "color_layout": "RGB"}
    assert fp32["parity"]["outputs"]["output"]["rel_l2"] <= 1e-5
    assert artifact(rep, "coreml", "fp16")["parity"]["outputs"]["output"]["snr_db"] >= 45
    # The TFLite file is untouched: it takes the normalized floats the source takes.
    tfl = artifact(rep, "tflite", "fp32")
    assert "pixels" not in tfl["io"]["inputs"][0] and tfl["parity"]["outputs"]["output"]["rel_l2"] <= 1e-5

    from bridge.validators.runners.coreml_reference import ReferenceRunner
    from bridge.validators.runners.coreml_reference.loader import load_package

    package = out / fp32["path"]
    assert load_package(str(package)).images == {"x": "RGB"}
    # The units matter: the normalized image fed as if it were pixels gives another answer.
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (1, 3, 64, 64)).astype(np.float32)
    norm = (pixels / 255 - np.reshape(MEAN, (1, 3, 1, 1))) / np.reshape(STD, (1, 3, 1, 1))
    runner = ReferenceRunner()
    runner.load(str(package))
    right = runner.infer({"x": pixels})["output"]
    wrong = runner.infer({"x": norm.astype(np.float32)})["output"]
    assert np.linalg.norm(wrong - right) / np.linalg.norm(right) > 0.1

    # `bridge validate` reads the units from the package's metadata.
    r = bridge("validate", f"{SAMPLES}/shapes_cnn.py:load", package, "--report", tmp_path / "v.json")
    assert r.returncode == 0, r.stderr[-2000:]


def test_keras_image_input_is_channel_first_in_core_ml(tmp_path):
    out = tmp_path / "out"
    r = bridge("convert", SAMPLES / "shapes_keras.keras", "--target", "coreml", "--quantize", "coreml=fp32",
               "--coreml-image-input", "--mean", "0.5", "--std", "0.5", "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    a = artifact(report(out), "coreml", "fp32")
    assert a["route"] == ["onnx", "bridge-mil", "coremltools"], "one std: the ImageType's scale carries it"
    x = a["io"]["inputs"][0]
    assert x["shape"] == [1, 3, 64, 64] and x["permutation"] == [0, 3, 1, 2]
    assert x["pixels"]["mean"] == [0.5] * 3 and x["pixels"]["std"] == [0.5] * 3
    assert a["parity"]["outputs"]["logits"]["rel_l2"] <= 1e-5


def test_image_input_usage_errors(tmp_path):
    linear = write_module(tmp_path / "lin.py", """
        import torch
        def make():
            return torch.nn.Linear(3, 2), torch.randn(1, 3)
        """)
    cases = [
        ([f"{linear}:make", "--target", "tflite"], "--coreml-image-input needs --target coreml"),
        ([f"{linear}:make", "--target", "coreml"], "no input is a batch-1 float image with 1 or 3 channels"),
        ([f"{SAMPLES}/shapes_cnn.py:load", "--target", "coreml", "--mean", "0.5,0.5"],
         "--mean has 2 values; image input x [1, 3, 64, 64] has 3 channel(s)"),
    ]
    for args, message in cases:
        r = bridge("convert", *args, "--coreml-image-input", "--out", tmp_path / "out")
        assert r.returncode == 2, r.stderr[-2000:]
        errors = [ln for ln in r.stderr.splitlines() if "error" in ln]
        assert len(errors) == 1 and message in errors[0] and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "out" / "report.json").exists()
