"""The pieces of `--coreml-image-input`: the pixel transform parity feeds, and the `image-input-std` pass."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from bridge.base.bindings import Binding, Pixels
from bridge.base.errors import UsageError
from bridge.converters.coreml.passes import apply_passes
from tests.converters.coreml.harness import graph

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def test_pixels_round_trip_and_broadcast():
    px = Pixels.per_channel(MEAN, STD, 3)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (1, 3, 4, 5)).astype(np.float32)
    norm = (pixels / 255 - np.reshape(MEAN, (1, 3, 1, 1))) / np.reshape(STD, (1, 3, 1, 1))
    np.testing.assert_allclose(px.to_pixels(norm.astype(np.float32), axis=1), pixels, atol=2e-4)
    # NHWC source, NCHW artifact: the binding transposes first, then scales along channels.
    b = Binding("x", "x", (1, 3, 4, 5), "image", (0, 3, 1, 2), "image", pixels=px)
    np.testing.assert_allclose(b.to_artifact(norm.transpose(0, 2, 3, 1).astype(np.float32)), pixels, atol=2e-4)
    gray = Pixels.per_channel((0.5,), (0.25,), 1)
    assert gray.color_layout == "GRAYSCALE" and gray.mean == (0.5,)
    assert Pixels.per_channel((), (), 3) == Pixels((0.0,) * 3, (1.0,) * 3, "RGB")
    with pytest.raises(UsageError, match="--std has 2 values; the image input has 3 channel"):
        Pixels.per_channel(MEAN, (0.2, 0.3), 3)


@pytest.mark.parametrize("channel_last", [False, True])
def test_std_pass_divides_every_consumer_by_std(channel_last):
    ort = pytest.importorskip("onnxruntime")
    shape = (1, 4, 4, 3) if channel_last else (1, 3, 4, 4)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    model = graph([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Sigmoid", ["x"], ["b"]),
                   helper.make_node("Add", ["a", "b"], ["y"])], {"x": x}, ["y"])
    before = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    px = Pixels.per_channel(MEAN, STD, 3)
    assert apply_passes(model, ["image-input-std"], {"x": px}, channel_last) == ["image-input-std x1"]
    axis = 3 if channel_last else 1
    std = np.reshape(STD, [3 if a == axis else 1 for a in range(4)]).astype(np.float32)
    # The model now takes `pixel/255 - mean` (what the ImageType hands it) and divides by std itself.
    after = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x * std})[0]
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6)
    # One std for every channel: the ImageType's scale carries it, the pass leaves the model alone.
    same = graph([helper.make_node("Relu", ["x"], ["y"])], {"x": x}, ["y"])
    assert apply_passes(same, ["image-input-std"], {"x": Pixels.per_channel((0.5,), (0.5,), 3)}, False) == []
    assert len(same.graph.node) == 1
