"""The onnxruntime tracer: every node output, given tensors, and one tensor carried to the outputs."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.validators.runners.onnxruntime import OnnxRuntimeTracer


@pytest.fixture
def chain(tmp_path):
    """x -> Mul(2) m -> Relu r -> Add(1) y, with a node name TensorFlow rejects."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Mul", ["x", "two"], ["m"], name="0:scale"),
             helper.make_node("Relu", ["m"], ["r"], name="1/relu"),
             helper.make_node("Add", ["r", "one"], ["y"], name="2:add")]
    inits = [numpy_helper.from_array(np.float32(2.0), "two"), numpy_helper.from_array(np.float32(1.0), "one")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], inits)
    path = tmp_path / "chain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    tracer = OnnxRuntimeTracer()
    tracer.load(str(path))
    return tracer


X = np.array([[-1.0, 0.5, 2.0], [3.0, -4.0, 0.0]], np.float32)


def test_every_node_output_is_traced(chain):
    graph = chain.graph()
    assert [op.name for op in graph.ops] == ["0:scale", "1/relu", "2:add"]
    assert graph.inputs == {"x": "x"} and graph.outputs == {"y": "y"}
    out = chain.trace({"x": X})
    np.testing.assert_array_equal(out["m"], X * 2)
    np.testing.assert_array_equal(out["r"], np.maximum(X * 2, 0))
    np.testing.assert_array_equal(out["y"], np.maximum(X * 2, 0) + 1)


def test_given_tensor_feeds_its_readers_and_keeps_its_own_value(chain):
    given = np.full((2, 3), -5.0, np.float32)
    out = chain.trace({"x": X}, {"m": given})
    np.testing.assert_array_equal(out["m"], X * 2)  # what its own op computed
    np.testing.assert_array_equal(out["r"], np.zeros((2, 3)))  # its reader read the given value
    np.testing.assert_array_equal(out["y"], np.ones((2, 3)))


def test_an_error_in_one_tensor_carried_to_the_outputs(chain):
    tensors, run = chain.perturbed(["m", "r"])
    assert tensors == ["m", "r"]
    zeros = {"m": np.zeros((2, 3), np.float32), "r": np.zeros((2, 3), np.float32)}
    np.testing.assert_array_equal(run({"x": X}, zeros)["y"], np.maximum(X * 2, 0) + 1)  # nothing moved
    np.testing.assert_array_equal(run({"x": X}, {**zeros, "r": np.full((2, 3), 0.5, np.float32)})["y"],
                                  np.maximum(X * 2, 0) + 1.5)
    moved = run({"x": X}, {**zeros, "m": np.full((2, 3), -100.0, np.float32)})["y"]  # the Relu of the reader
    np.testing.assert_array_equal(moved, np.ones((2, 3)))
