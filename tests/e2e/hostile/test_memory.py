"""Outputs cost at most 3x their bytes in memory, over the whole process tree (issue 9, class 7).

Parity outputs live on disk one sample per file and are compared in chunks; before that change,
512 MB of outputs took 5.2 GB. Measured by sampling the summed RSS of `bridge` and every process
it starts, against the same graph with tiny outputs.
"""

from __future__ import annotations

import subprocess
import time

import numpy as np
import pytest

from tests.conftest import BRIDGE
from tests.e2e.hostile import models as m

SAMPLES = 8


def _tile(path, elements: int):
    """y = Tile(x) from a [1, 1024] input to [elements / 1024, 1024] float32."""
    _, _, helper, numpy_helper = m._onnx()
    reps = numpy_helper.from_array(np.array([elements // 1024, 1], np.int64), "reps")
    model = m.model([helper.make_node("Tile", ["x", "reps"], ["y"])], [m.vi("x", [1, 1024])],
                    [m.vi("y", [elements // 1024, 1024])], [reps])
    return m.save(model, path)


def _peak_tree_rss(args, cwd) -> int:
    psutil = pytest.importorskip("psutil")
    proc = subprocess.Popen([str(BRIDGE), *map(str, args)], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    root, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        total = 0
        try:
            for p in [root, *root.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    continue
        except psutil.Error:
            pass
        peak = max(peak, total)
        time.sleep(0.01)
    assert proc.returncode == 0, proc.stderr.read()[-2000:]
    return peak


@pytest.mark.slow
def test_output_memory_is_bounded(tmp_path):
    per_sample = 16 << 20  # elements: 64 MB of float32 per sample, 512 MB over 8 samples
    big = _tile(tmp_path / "big" / "m.onnx", per_sample)
    small = _tile(tmp_path / "small" / "m.onnx", 1024)
    base = _peak_tree_rss(["convert", small, "--target", "onnx", "--samples", SAMPLES, "--out", "o1"], tmp_path)
    peak = _peak_tree_rss(["convert", big, "--target", "onnx", "--samples", SAMPLES, "--out", "o2"], tmp_path)
    outputs = SAMPLES * per_sample * 4
    assert peak - base <= 3 * outputs, f"{(peak - base) / outputs:.2f}x the outputs' bytes"
