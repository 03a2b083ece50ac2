"""Activation ranges on onnxruntime: the fp16 overflow check and int8 calibration share them."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.activations import FP16_MAX, Overflow, activation_ranges, computes_in_fp16, fp16_overflows, overflow_warning
from bridge.errors import ConversionError
from bridge.modes import Mode

pytest.importorskip("onnxruntime")


def _graph(path=None):
    """x -> *300 (a) -> *300 (b) -> /90000 (y): only `b` leaves float16's range, and comes back."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    consts = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("k", 300.0), ("d", 90000.0))]
    nodes = [helper.make_node("Mul", ["x", "k"], ["a"], name="scale1"),
             helper.make_node("Mul", ["a", "k"], ["b"], name="scale2"),
             helper.make_node("Div", ["b", "d"], ["y"], name="down"),
             helper.make_node("Sqrt", ["x"], ["root"], name="root")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3]),
                               helper.make_tensor_value_info("root", TensorProto.FLOAT, [1, 3])], initializer=consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    if path is not None:
        onnx.save(model, path)
    return model


FEEDS = [{"x": np.array([[1.0, 0.25, -1.0]], np.float32)}, {"x": np.array([[0.5, -0.5, 0.0]], np.float32)}]


def test_ranges_cover_every_float_tensor_and_skip_nan():
    ranges = activation_ranges(_graph(), FEEDS)
    assert ranges["a"] == (-300.0, 300.0)
    assert ranges["b"] == (-90000.0, 90000.0)
    assert ranges["y"] == (-1.0, 1.0)
    assert ranges["root"] == (0.0, 1.0)  # sqrt(-1) and sqrt(-0.5) are NaN: left out, not poisoning the range


def test_ranges_need_samples():
    with pytest.raises(ConversionError, match="at least one sample"):
        activation_ranges(_graph(), [])


def test_overflow_names_the_tensor_by_its_source_node(tmp_path):
    path = tmp_path / "m.onnx"
    _graph(path)
    found = fp16_overflows(str(path), FEEDS, {"scale2": "model/amplify/mul"})
    assert found == [Overflow("b", "model/amplify/mul", 90000.0)]
    assert str(found[0]) == "model/amplify/mul (tensor b): max |x| 9e+04"


def test_inputs_beyond_fp16_are_reported_first(tmp_path):
    path = tmp_path / "m.onnx"
    _graph(path)
    found = fp16_overflows(str(path), [{"x": np.array([[70000.0, 0.0, 1.0]], np.float32)}], {})
    assert [(o.node, o.tensor) for o in found] == [("input", "x"), ("scale1", "a"), ("scale2", "b"), ("down", "y")]
    assert found[0].max_abs == 70000.0 and str(found[0]) == "input x: max |x| 7e+04"


def test_nothing_found_within_range(tmp_path):
    path = tmp_path / "m.onnx"
    _graph(path)
    assert fp16_overflows(str(path), [{"x": np.full((1, 3), 0.5, np.float32)}], {}) == []


def test_which_modes_compute_in_fp16():
    assert computes_in_fp16("tflite", Mode.FP16)
    assert not any(computes_in_fp16("tflite", m) for m in (Mode.FP32, Mode.DYNAMIC_INT8, Mode.INT8, Mode.INT16X8))
    assert all(computes_in_fp16("coreml", m) for m in (Mode.FP16, Mode.INT8_WEIGHTS, Mode.PALETTIZE_4, Mode.INT8))
    assert not computes_in_fp16("coreml", Mode.FP32)
    assert not computes_in_fp16("onnx", Mode.FP32)


def test_warning_names_the_first_tensors_the_limit_and_the_artifacts():
    found = [Overflow(f"t{i}", f"node{i}", FP16_MAX * (i + 2)) for i in range(5)]
    text = overflow_warning(found, ["tflite/fp16", "coreml/int8-weights"])
    assert text.startswith("fp16 overflow: 5 tensor(s) exceed 65504 (the float16 maximum)")
    assert "node0 (tensor t0): max |x| 1.31e+05; node1 (tensor t1): max |x| 1.965e+05; node2" in text
    assert "node3" not in text and "and 2 more" in text
    assert "Affected: tflite/fp16, coreml/int8-weights (TFLite runs fp16 files in fp32 on CPU" in text
    assert "GPU" not in overflow_warning(found, ["coreml/fp16"])
