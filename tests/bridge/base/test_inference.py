"""Shape inference on a model's structure alone (`bridge.base.inference`)."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.base.inference import KEEP_BYTES, infer, size_bound, weightless

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


def _many(count: int = 40):
    """`count` large initializers, raw and typed (float_data), and a large Constant inside a node."""
    from onnx import helper, numpy_helper

    model = _model()
    rng = np.random.default_rng(0)
    for i in range(count):
        t = numpy_helper.from_array(rng.standard_normal(300 + 37 * i).astype(np.float32), f"extra{i}")
        if i % 2:  # typed field instead of raw bytes
            t = helper.make_tensor(f"extra{i}", t.data_type, t.dims, numpy_helper.to_array(t).tolist())
        model.graph.initializer.append(t)
    model.graph.node.append(helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(
        rng.standard_normal(5000).astype(np.float32), "c")))
    return model


@pytest.mark.parametrize("count", [0, 1, 40])
def test_size_bound_is_at_least_the_encoded_size_and_close_to_it(count):
    model = _many(count)
    exact, bound = model.ByteSize(), size_bound(model)
    left_out = sum(t.ByteSize() > KEEP_BYTES for t in model.graph.initializer)
    assert exact <= bound <= exact + 64 * left_out  # the framing and each shell's name and dims, twice


def test_size_bound_counts_fields_this_onnx_does_not_know():
    """A field number no onnx version uses, on the model and on the graph: kept by protobuf as an
    unknown field, which the field-by-field copy would miss; the size is then measured exactly."""
    from onnx import ModelProto

    payload = b"\x00" * 5000
    unknown = b"\xfa\x3e" + bytes([0x88, 0x27]) + payload  # field 1999, length-delimited, 5000 bytes
    model = ModelProto.FromString(_many(3).SerializeToString() + unknown)
    assert size_bound(model) == model.ByteSize() >= len(payload)
    graph_model = _many(3)
    graph_model.graph.ParseFromString(graph_model.graph.SerializeToString() + unknown)
    assert size_bound(graph_model) == graph_model.ByteSize()
