"""Samples on disk: a small sample read again comes from memory, a file written anew is read anew."""

from __future__ import annotations

import os

import numpy as np
import pytest

from bridge.base import arrays
from bridge.base.arrays import Feeds, FeedWriter


def _written(folder, values):
    writer = FeedWriter(folder, ["y"])
    for v in values:
        writer.append({"y": v})
    return writer.close()


def test_small_samples_are_read_once_and_stay_read_only(tmp_path):
    feeds = _written(tmp_path / "f", [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(3, np.float32)])
    first = list(feeds.column("y"))
    again = list(Feeds.open(tmp_path / "f").column("y"))
    assert all(a is b for a, b in zip(first, again, strict=True))  # the same arrays, not read again
    np.testing.assert_array_equal(again[0], np.arange(6, dtype=np.float32).reshape(2, 3))
    with pytest.raises(ValueError):
        again[0][0, 0] = 5.0


@pytest.mark.parametrize("how", ["replaced", "rewritten", "resized"])
def test_a_sample_file_written_again_is_read_again(tmp_path, how):
    feeds = _written(tmp_path / "f", [np.zeros(4, np.float32)])
    assert list(feeds.column("y"))[0].tolist() == [0, 0, 0, 0]
    path = tmp_path / "f" / "000000_0000.npy"
    new = np.full(8 if how == "resized" else 4, 7, np.float32)
    if how == "replaced":  # a new file under the old name, as write_atomic does
        np.save(tmp_path / "tmp.npy", new)
        os.replace(tmp_path / "tmp.npy", path)
    else:
        np.save(path, new)
        stamp = path.stat().st_mtime_ns + 1_000_000  # a later write, even on a coarse clock
        os.utime(path, ns=(stamp, stamp))
    np.testing.assert_array_equal(list(feeds.column("y"))[0], new)


def test_large_samples_are_not_kept(tmp_path):
    before = arrays._RECENT.size
    feeds = _written(tmp_path / "f", [np.zeros(arrays._KEEP_BELOW // 4 + 1, np.float32)])
    list(feeds.column("y"))
    assert arrays._RECENT.size == before
