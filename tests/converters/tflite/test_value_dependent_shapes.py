"""An output whose size depends on input values (Range's length on its `start`). onnx's
test_range_float_type_positive_delta declares the output [2] (start 1, limit 5, delta 2); on another
start the source gives another length. onnx2tf writes the declared [2] into the file's signature and
its RANGE kernel computes the real length: the lane binds the output and parity judges it."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.base.lane import LaneRequest
from bridge.base.tensors import TensorSpec

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnx2tf")
helper, numpy_helper, TensorProto = onnx.helper, onnx.numpy_helper, onnx.TensorProto


def _range(declared: int) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(np.array(5.0, np.float32), "limit"),
             numpy_helper.from_array(np.array(2.0, np.float32), "delta")]
    graph = helper.make_graph([helper.make_node("Range", ["start", "limit", "delta"], ["output"], name="range")], "g",
                              [helper.make_tensor_value_info("start", TensorProto.FLOAT, [])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [declared])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _request(tmp_path, declared: int, measured: int) -> LaneRequest:
    onnx.save(_range(declared), tmp_path / "hub.onnx")
    return LaneRequest(hub_path=str(tmp_path / "hub.onnx"), workdir=str(tmp_path), name="range", modes=("fp32",),
                       framework="onnx", inputs=(TensorSpec("start", ()),),
                       outputs=(TensorSpec("output", (measured,)),))


def test_only_an_axis_declared_at_another_size_than_measured_is_left_to_parity(tmp_path):
    from bridge.converters.tflite.lane import _dynamic_outputs

    assert _dynamic_outputs(_request(tmp_path, 2, 3).hub_path, (TensorSpec("output", (3,)),)) == {"output": (0,)}
    assert _dynamic_outputs(_request(tmp_path, 3, 3).hub_path, (TensorSpec("output", (3,)),)) == {"output": ()}


def test_range_whose_length_follows_start_converts_and_computes_every_length(tmp_path):
    from bridge.converters.tflite.lane import convert
    from bridge.validators.runners.tflite import TFLiteRunner

    [art] = convert(_request(tmp_path, 2, 3))  # a sample's start of 0.1 gave 3 values; the graph says 2
    assert art.error is None, art.error
    runner = TFLiteRunner()
    runner.load(art.path)
    [start] = art.io.inputs
    for value in (0.1, 1.0, 4.5):
        out = runner.infer({start.artifact_name: start.to_artifact(np.array(value, np.float32))})["output"]
        assert np.array_equal(out, np.arange(value, 5.0, 2.0, dtype=np.float32)), (value, out)
