"""Shape inference on a model's structure alone (`bridge.base.inference`)."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.base.inference import KEEP_BYTES, infer, weightless

onnx = pytest.importorskip("onnx")


def _model():
    """x[1,64] @ W[64,64] (16 KB: its bytes are dropped) -> Reshape by a shape initializer (kept:
    inference reads its values) -> [1,8,8]."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.arange(64 * 64, dtype=np.float32).reshape(64, 64), "w")
    shape = numpy_helper.from_array(np.array([1, 8, 8], np.int64), "shape")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Reshape", ["h", "shape"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[w, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    model.metadata_props.add(key="author", value="someone")
    return model


def test_inference_without_the_weights_infers_what_onnx_infers_with_them():
    model = _model()
    ours, theirs = infer(model), onnx.shape_inference.infer_shapes(model)
    assert [(v.name, v.type) for v in ours.graph.value_info] == [(v.name, v.type) for v in theirs.graph.value_info]
    assert [d.dim_value for d in ours.graph.output[0].type.tensor_type.shape.dim] == [1, 8, 8]  # the shape's values


def test_weightless_drops_large_tensor_bytes_only_and_copies_every_other_field():
    model = _model()
    light = weightless(model)
    w, shape = light.graph.initializer
    assert (w.name, list(w.dims), w.data_type, w.raw_data) == ("w", [64, 64], 1, b"")
    assert shape == model.graph.initializer[1] and shape.ByteSize() <= KEEP_BYTES
    assert light.metadata_props == model.metadata_props and light.opset_import == model.opset_import
    assert light.graph.node == model.graph.node and light.graph.output == model.graph.output
    assert model.graph.initializer[0].raw_data  # the model itself is untouched
