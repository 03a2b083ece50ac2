"""Scalars: TFLite has no rank-0 tensors, and onnx2tf writes a scalar input or output as [1]. The
lane binds them as such and bridge's runner feeds and reads them that way."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.base.bindings import Binding
from bridge.base.lane import LaneRequest
from bridge.base.tensors import TensorSpec

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnx2tf")
helper, TensorProto = onnx.helper, onnx.TensorProto


def _pow_by_scalar() -> onnx.ModelProto:
    """onnx's test_pow_bcast_scalar, with a scalar output added: x [3] ** y [], and the sum of that."""
    nodes = [helper.make_node("Pow", ["x", "y"], ["z"], name="pow"),
             helper.make_node("ReduceSum", ["z"], ["total"], keepdims=0, name="sum")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3]),
                                           helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [3]),
                               helper.make_tensor_value_info("total", TensorProto.FLOAT, [])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_a_scalar_fed_to_an_artifact_that_holds_it_as_one_element():
    b = Binding("y", "y", (1,), "float32")
    assert b.to_artifact(np.array(2.0, np.float32)).shape == (1,)
    assert b.to_artifact(np.array([2.0], np.float32)).shape == (1,)
    assert Binding("y", "y", (), "float32").to_artifact(np.array(2.0, np.float32)).shape == ()


def test_scalar_input_and_output_convert_and_compute(tmp_path):
    from bridge.converters.tflite.lane import convert
    from bridge.validators.runners.tflite import TFLiteRunner

    onnx.save(_pow_by_scalar(), tmp_path / "hub.onnx")
    req = LaneRequest(hub_path=str(tmp_path / "hub.onnx"), workdir=str(tmp_path), name="pow", modes=("fp32",),
                      framework="onnx", inputs=(TensorSpec("x", (3,)), TensorSpec("y", ())),
                      outputs=(TensorSpec("z", (3,)), TensorSpec("total", ())))
    [art] = convert(req)
    assert art.error is None, art.error
    y = next(b for b in art.io.inputs if b.name == "y")
    assert y.shape == (1,)
    runner = TFLiteRunner()
    runner.load(art.path)
    x, e = np.array([1.0, 2.0, 3.0], np.float32), np.array(2.0, np.float32)
    out = runner.infer({b.artifact_name: b.to_artifact(v) for b, v in zip(art.io.inputs, (x, e), strict=True)})
    assert np.array_equal(out["z"], [1.0, 4.0, 9.0]) and out["total"].reshape(()) == 14.0
