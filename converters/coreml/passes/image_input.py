"""`image-input-std`: the per-channel 1/std that an ImageType cannot express (see ../images.py)."""

from __future__ import annotations

import numpy as np

from bridge.base.bindings import Pixels
from bridge.converters.coreml.images import uniform_std
from bridge.converters.coreml.passes import coreml_pass
from bridge.converters.onnx.graph import fresh_name


@coreml_pass("image-input-std")
def image_input_std(model, images: dict[str, Pixels], channel_last: bool) -> int:
    """After each image input whose std differs per channel, multiply by 1/std[c]; every consumer
    (subgraphs included) reads the product."""
    from onnx import helper, numpy_helper

    count = 0
    for name, pixels in images.items():
        if uniform_std(pixels):
            continue
        shape = [1, 1, 1, len(pixels.std)] if channel_last else [1, len(pixels.std), 1, 1]
        inv = (1.0 / np.asarray(pixels.std, np.float32)).reshape(shape)
        const, scaled = fresh_name(model, f"{name}__inv_std"), fresh_name(model, f"{name}__std")
        _rewire(model.graph, name, scaled)
        model.graph.initializer.append(numpy_helper.from_array(inv, const))
        model.graph.node.insert(0, helper.make_node("Mul", [name, const], [scaled], name=scaled))
        count += 1
    return count


def _rewire(graph, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if i == old else i for i in node.input]
        for attr in node.attribute:
            for sub in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
                _rewire(sub, old, new)
