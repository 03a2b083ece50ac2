"""Calibration data: arrays, archives and images become samples in the source's units and layout."""

import numpy as np
import pytest

from bridge.base.errors import UsageError
from bridge.base.samples import CalibrationOptions, load, split_samples
from bridge.base.tensors import TensorSpec, Values
from tests.conftest import SAMPLES

IMAGE = TensorSpec("image", (1, 3, 64, 64))


def test_images_scaled_normalized_and_channel_first():
    opts = CalibrationOptions(str(SAMPLES / "calibration"), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    feeds = load(opts, [IMAGE], channel_last=False)
    assert len(feeds) == 24 and feeds[0]["image"].shape == (1, 3, 64, 64)
    x = np.concatenate([f["image"] for f in feeds])
    assert x.min() >= -2.0 - 1e-6 and x.max() <= 2.0 + 1e-6 and x.min() < -1.5 and x.max() > 1.5


def test_images_channel_last_and_resized():
    spec = TensorSpec("image", (1, 32, 48, 3))
    feeds = load(CalibrationOptions(str(SAMPLES / "calibration"), limit=3), [spec], channel_last=True)
    assert [f["image"].shape for f in feeds] == [(1, 32, 48, 3)] * 3


def test_arrays_and_archives(tmp_path):
    spec = TensorSpec("x", (1, 5))
    np.save(tmp_path / "a.npy", np.ones((4, 5), np.float32))  # a stack of 4 samples
    np.save(tmp_path / "b.npy", np.zeros(5, np.float32))  # one sample without its batch axis
    assert len(load(CalibrationOptions(str(tmp_path)), [spec], False)) == 5
    z = tmp_path / "one.npz"
    np.savez(z, x=np.arange(15, dtype=np.float32).reshape(3, 5))
    assert len(load(CalibrationOptions(str(z)), [spec], False)) == 3
    with pytest.raises(UsageError, match="no array for input"):
        load(CalibrationOptions(str(z)), [TensorSpec("y", (1, 5))], False)
    np.save(tmp_path / "bad.npy", np.ones((2, 7), np.float32))
    with pytest.raises(UsageError, match="does not fit input x"):
        load(CalibrationOptions(str(tmp_path)), [spec], False)


def test_parity_samples_are_held_out():
    s = split_samples(CalibrationOptions(str(SAMPLES / "calibration")), [IMAGE], False, 8, 0)
    assert len(s.parity) == 8 and len(s.calibration) == 16
    assert s.parity_origin.to_json() == {"origin": "calibration", "count": 8, "path": str(SAMPLES / "calibration")}
    assert s.origin.to_json() == {"origin": "user", "count": 16, "path": str(SAMPLES / "calibration")}
    held = {f["image"].tobytes() for f in s.parity}
    assert not held & {f["image"].tobytes() for f in s.calibration}
    assert s.parity_origin.to_json() == {"origin": "calibration", "count": 8, "path": str(SAMPLES / "calibration")}
    synthetic = split_samples(CalibrationOptions(), [IMAGE], False, 8, 0)
    assert synthetic.origin.origin == "synthetic" and synthetic.warnings
    assert synthetic.parity_origin.to_json() == {"origin": "synthetic", "count": 8, "seed": 0,
                                                 "detail": "image: pixel images in [0, 1]"}
    assert not np.array_equal(synthetic.calibration[0]["image"], synthetic.parity[0]["image"])


def test_image_inputs_without_an_example_get_pixel_images():
    s = split_samples(CalibrationOptions(), [IMAGE], False, 4, 0)
    x = np.concatenate([f["image"] for f in s.parity])
    assert x.min() >= 0.0 and x.max() <= 1.0  # not standard-normal noise
    assert np.allclose(x * 255, np.round(x * 255), atol=1e-4)  # whole pixel values
    assert "image: pixel images in [0, 1]" in s.parity_origin.detail
    normalized = split_samples(CalibrationOptions(mean=(0.5,), std=(0.25,)), [IMAGE], False, 4, 0)
    y = np.concatenate([f["image"] for f in normalized.parity])
    assert y.min() >= -2.0 - 1e-6 and y.max() <= 2.0 + 1e-6 and y.min() < -1.9


def test_synthetic_samples_follow_the_example():
    example = np.random.default_rng(5).random((1, 3, 16, 16)).astype(np.float32)  # [0, 1), like torch.rand
    spec = TensorSpec("x", example.shape, values=Values.of([example]))
    s = split_samples(CalibrationOptions(), [spec], False, 8, 0)
    x = np.concatenate([f["x"] for f in s.parity])
    assert 0.0 <= x.min() < 0.01 and 0.99 < x.max() < 1.0
    assert abs(x.mean() - example.mean()) < 0.01 and abs(x.std() - example.std()) < 0.01
    assert s.parity_origin.detail.startswith("x: drawn from its example values [")
    calib = np.concatenate([f["x"] for f in s.calibration])  # synthetic calibration follows it too
    assert 0.0 <= calib.min() and calib.max() < 1.0
    pixels = (np.random.default_rng(1).integers(0, 256, (1, 8, 8, 3))).astype(np.float32)
    whole = TensorSpec("p", pixels.shape, values=Values.of([pixels]))
    p = split_samples(CalibrationOptions(), [whole], True, 2, 0).parity[0]["p"]
    assert p.max() > 200 and np.array_equal(p, np.round(p))  # 0-255 whole pixels, like the example
    assert Values.of([np.zeros((1, 3, 8, 8), np.float32)]) is None  # torch.zeros says nothing


def test_parity_data_is_used_and_kept_out_of_calibration(tmp_path):
    spec = TensorSpec("x", (1, 4))
    data = np.arange(40, dtype=np.float32).reshape(10, 4)
    np.save(tmp_path / "calib.npy", data)
    parity_dir = tmp_path / "parity"
    parity_dir.mkdir()
    np.save(parity_dir / "p.npy", data[7:])  # 3 of the calibration samples
    opts = CalibrationOptions(str(tmp_path), parity_path=str(parity_dir))
    s = split_samples(opts, [spec], False, 8, 0)
    assert [f["x"].tolist() for f in s.parity] == [[r.tolist()] for r in data[7:]]
    assert len(s.calibration) == 7  # calib.npy's 10 samples without the 3 that are parity data
    assert s.parity_origin.to_json() == {"origin": "user", "count": 3, "path": str(parity_dir)}
    with pytest.raises(UsageError, match="every --calibration sample is also a --parity-data sample"):
        split_samples(CalibrationOptions(str(parity_dir), parity_path=str(parity_dir)), [spec], False, 8, 0)
    with pytest.raises(UsageError, match="--parity-data .*no such file"):
        split_samples(CalibrationOptions(parity_path=str(tmp_path / "nope")), [spec], False, 8, 0)


def test_too_little_calibration_data_still_shapes_the_parity_inputs(tmp_path):
    spec = TensorSpec("x", (1, 64))
    np.save(tmp_path / "few.npy", np.random.default_rng(0).uniform(10.0, 20.0, (3, 64)).astype(np.float32))
    s = split_samples(CalibrationOptions(str(tmp_path)), [spec], False, 8, 0)
    x = np.concatenate([f["x"] for f in s.parity])
    assert len(s.parity) == 8 and 10.0 <= x.min() and x.max() <= 20.0
    assert "drawn from its calibration data values" in s.parity_origin.detail


def test_a_scalar_input_stays_an_array():
    """np.interp unboxes a 0-d input to a numpy scalar, which onnxruntime refuses as a feed."""
    spec = TensorSpec("s", (), values=Values.of([np.array([0.25, 0.5, 0.75], np.float32)]))
    x = split_samples(CalibrationOptions(), [spec], False, 2, 0).parity[0]["s"]
    assert isinstance(x, np.ndarray) and x.shape == () and x.dtype == np.float32 and 0.25 <= x <= 0.75
