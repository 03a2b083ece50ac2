"""The same Keras source gives the same hub ONNX bytes, run after run.

tf2onnx numbers the tensors its optimizers create from a process-wide counter, in an order that
varies between runs (its node lists pass through sets of nodes hashed by address); the hub
renumbers them from the graph's structure alone.
"""

from __future__ import annotations

import hashlib

import pytest

from tests.conftest import SAMPLES, bridge, report

pytestmark = pytest.mark.slow


def _hub_sha256s(source, tmp_path, runs: int) -> list[str]:
    """Convert `source` to ONNX `runs` times; each report's sha256, checked against the file's bytes."""
    hashes = []
    for i in range(runs):
        out = tmp_path / f"out{i}"
        r = bridge("convert", source, "--target", "onnx", "--out", out)
        assert r.returncode == 0, r.stderr[-3000:]
        (art,) = report(out)["artifacts"]
        assert hashlib.sha256((out / art["path"]).read_bytes()).hexdigest() == art["sha256"]
        hashes.append(art["sha256"])
    return hashes


def test_keras_sample_hub_is_byte_identical(tmp_path):
    hashes = _hub_sha256s(SAMPLES / "shapes_keras.keras", tmp_path, runs=4)
    assert len(set(hashes)) == 1, hashes


def _folded_branches(path):
    """Four branches, each with kernels tf2onnx transposes and folds, and one output per branch."""
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    image = keras.Input((16, 16, 3), name="image")
    outputs = []
    for i in range(4):
        x = keras.layers.Conv2D(4 + i, 3, padding="same", activation="relu", name=f"conv_{i}")(image)
        x = keras.layers.DepthwiseConv2D(3, padding="same", name=f"depthwise_{i}")(x)
        x = keras.layers.BatchNormalization(name=f"norm_{i}")(x)
        x = keras.layers.GlobalAveragePooling2D(name=f"pool_{i}")(x)
        outputs.append(keras.layers.Dense(2 + i, name=f"head_{i}")(x))
    keras.Model(image, outputs).save(path)
    return path


def test_folded_branches_hub_is_byte_identical(tmp_path):
    source = _folded_branches(tmp_path / "branches.keras")
    hashes = _hub_sha256s(source, tmp_path, runs=2)
    assert len(set(hashes)) == 1, hashes
