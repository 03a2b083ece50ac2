"""onnx2tf 2.x's float32 file as the lane takes it: float16 graph outputs made float16 again."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.converters.tflite.direct import restore_float16_outputs
from bridge.converters.tflite.preflight import refused_ops
from tests.converters.tflite.helpers import to_tflite

onnx = pytest.importorskip("onnx")
helper, TensorProto = onnx.helper, onnx.TensorProto


def _cast_to_half() -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT16, name="to_half")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [3, 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_a_float16_output_is_rounded_to_float16_again(tmp_path):
    """onnx2tf 2.6.9 writes the cast as a float32 cast: the output comes back unrounded (rel. L2
    2.8e-4 against onnxruntime's float16, over the fp32 bar) until the lane restores it."""
    model = _cast_to_half()
    assert refused_ops(model) == []  # a graph output: the lane restores it
    path = to_tflite(model, tmp_path)
    x = [np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)]
    from bridge.validators.runners.tflite import TFLiteRunner

    def y() -> np.ndarray:
        runner = TFLiteRunner()
        runner.load(str(path))
        return runner.infer({"x": x[0]})["y"]

    before = y()
    assert before.dtype == np.float32 and not np.array_equal(before, x[0].astype(np.float16).astype(np.float32))
    assert restore_float16_outputs(path, {"y"}) == ["y"]
    after = y()
    assert after.dtype == np.float16 and np.array_equal(after, x[0].astype(np.float16))
    assert restore_float16_outputs(path, {"y"}) == []  # already float16
