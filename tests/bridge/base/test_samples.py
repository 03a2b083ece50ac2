"""Calibration data: arrays, archives and images become samples in the source's units and layout."""

import numpy as np
import pytest

from bridge.base.errors import UsageError
from bridge.base.samples import CalibrationOptions, load, split_samples
from bridge.base.tensors import TensorSpec, synthetic_samples
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
    parity = synthetic_samples([IMAGE], 8, 0).feeds
    s = split_samples(CalibrationOptions(str(SAMPLES / "calibration")), [IMAGE], False, parity, 0)
    assert len(s.parity) == 8 and len(s.calibration) == 16
    held = {f["image"].tobytes() for f in s.parity}
    assert not held & {f["image"].tobytes() for f in s.calibration}
    synthetic = split_samples(CalibrationOptions(), [IMAGE], False, parity, 0)
    assert synthetic.parity is parity and "synthetic" in synthetic.origin and synthetic.warnings
    assert not np.array_equal(synthetic.calibration[0]["image"], parity[0]["image"])
