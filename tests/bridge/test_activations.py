"""Activation ranges on onnxruntime: the fp16 overflow check and int8 calibration share them."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.activations import (
    FP16_MAX,
    Constant,
    Overflow,
    activation_ranges,
    computes_in_fp16,
    constant_warning,
    fp16_constants,
    fp16_overflows,
    fp16_warnings,
    overflow_warning,
)
from bridge.errors import ConversionError
from bridge.modes import Mode

pytest.importorskip("onnxruntime")


def _graph(path=None, nodes=(), initializer=()):
    """x -> *300 (a) -> *300 (b) -> /300 (c) -> /300 (y): only `b` leaves float16's range, and comes
    back; every constant fits float16. `nodes` and `initializer` are added to it."""
    from onnx import TensorProto, helper, numpy_helper

    consts = [numpy_helper.from_array(np.array(300.0, np.float32), "k"), *initializer]
    nodes = [helper.make_node("Mul", ["x", "k"], ["a"], name="scale1"),
             helper.make_node("Mul", ["a", "k"], ["b"], name="scale2"),
             helper.make_node("Div", ["b", "k"], ["c"], name="down"),
             helper.make_node("Div", ["c", "k"], ["y"], name="back"),
             helper.make_node("Sqrt", ["x"], ["root"], name="root"), *nodes]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3]),
                               helper.make_tensor_value_info("root", TensorProto.FLOAT, [1, 3])], initializer=consts)
    return _model(graph, path)


def _model(graph, path=None):
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    if path is not None:
        onnx.save(model, path)
    return model


def _init(name, values, dtype=np.float32):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.array(values, dtype), name)


def _const(name, out, **value):
    """A Constant node; `value=` takes an array, `value_float(s)=` plain floats."""
    from onnx import helper, numpy_helper

    if isinstance(value.get("value"), np.ndarray):
        value["value"] = numpy_helper.from_array(value["value"])
    return helper.make_node("Constant", [], [out], name=name, **value)


FEEDS = [{"x": np.array([[1.0, 0.25, -1.0]], np.float32)}, {"x": np.array([[0.5, -0.5, 0.0]], np.float32)}]


def test_ranges_cover_every_float_tensor_and_skip_nan():
    ranges = activation_ranges(_graph(), FEEDS)
    assert ranges["a"] == (-300.0, 300.0)
    assert ranges["b"] == (-90000.0, 90000.0)
    assert ranges["c"] == (-300.0, 300.0)
    assert ranges["y"] == (-1.0, 1.0)
    assert ranges["root"] == (0.0, 1.0)  # sqrt(-1) and sqrt(-0.5) are NaN: left out, not poisoning the range


def test_ranges_need_samples():
    with pytest.raises(ConversionError, match="at least one sample"):
        activation_ranges(_graph(), [])


def test_overflow_names_the_tensor_by_its_source_node(tmp_path):
    path = tmp_path / "m.onnx"
    _graph(path)
    found = fp16_overflows(str(path), [FEEDS], {"scale2": "model/amplify/mul"})
    assert found == [Overflow("b", "model/amplify/mul", 90000.0)]
    assert str(found[0]) == "model/amplify/mul (tensor b): max |x| 9e+04"


def test_inputs_beyond_fp16_are_reported_first(tmp_path):
    path = tmp_path / "m.onnx"
    _graph(path)
    found = fp16_overflows(str(path), [[{"x": np.array([[70000.0, 0.0, 1.0]], np.float32)}]], {})
    assert [(o.node, o.tensor) for o in found] == [("input", "x"), ("scale1", "a"), ("scale2", "b"), ("down", "c"),
                                                   ("back", "y")]
    assert found[0].max_abs == 70000.0 and str(found[0]) == "input x: max |x| 7e+04"


def test_nothing_found_within_range(tmp_path):
    path = tmp_path / "m.onnx"
    _graph(path)
    found = fp16_overflows(str(path), [[{"x": np.full((1, 3), 0.5, np.float32)}]], {})
    assert found == [] and fp16_warnings(found, ["tflite/fp16", "coreml/fp16"]) == []


def test_initializer_beyond_fp16_found_whatever_the_samples(tmp_path):
    """x * 1e5 / 1e5 stays within range on small inputs; the constant does not."""
    from onnx import helper

    path = tmp_path / "m.onnx"
    big = "/gain/Constant_output_0"  # as torch and onnxslim name a folded scalar
    gain = [helper.make_node("Mul", ["x", big], ["gained"], name="gain"),
            helper.make_node("Div", ["gained", big], ["undone"], name="undo")]
    _graph(path, gain, [_init(big, 1e5)])
    found = fp16_overflows(str(path), [[{"x": np.full((1, 3), 1e-3, np.float32)}]], {"gain": "model/gain"})
    assert found == [Constant(big, None, 1e5, 1)]
    assert found[0].overflows and not found[0].vanishes
    assert str(found[0]) == "initializer /gain/Constant_output_0"


def test_constant_node_named_by_its_source_node_and_not_as_an_activation_too(tmp_path):
    """Its output is also a computed tensor the activation ranges see: reported once, as a constant."""
    from onnx import helper

    path = tmp_path / "m.onnx"
    nodes = [_const("neg_sanitized", "neg", value=np.array([[-7e4, 1.0, 0.0]], np.float32)),
             helper.make_node("Mul", ["x", "neg"], ["scaled"], name="use")]
    _graph(path, nodes)
    found = fp16_overflows(str(path), [[{"x": np.full((1, 3), 1e-3, np.float32)}]], {"neg_sanitized": "model/neg:0"})
    assert found == [Constant("neg", "model/neg:0", 7e4, 3)]
    assert str(found[0]) == "model/neg:0 (tensor neg)"


def test_constants_in_subgraphs_and_every_form_of_constant_value():
    from onnx import TensorProto, helper

    then = helper.make_graph([_const("then_k", "tk", value_float=-9e4),
                              helper.make_node("Mul", ["x", "tk"], ["t_out"], name="then_mul")], "then", [],
                             [helper.make_tensor_value_info("t_out", TensorProto.FLOAT, [1, 3])],
                             initializer=[_init("then_init", [2e5, 1.0])])
    other = helper.make_graph([_const("else_k", "ek", value_floats=[1.0, 70000.0]),
                               helper.make_node("Mul", ["x", "ek"], ["e_out"], name="else_mul")], "else", [],
                              [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, [1, 3])])
    branch = helper.make_node("If", ["cond"], ["picked"], name="choose_sanitized", then_branch=then, else_branch=other)
    found = fp16_constants(_graph(nodes=[branch]), {"choose_sanitized": "model/choose"})
    assert [(str(c), c.max_abs) for c in found] == [  # onnx keeps a node's attributes sorted by name
        ("else_k (tensor ek) in If model/choose (else_branch)", 7e4),
        ("initializer then_init in If model/choose (then_branch)", 2e5),
        ("then_k (tensor tk) in If model/choose (then_branch)", 9e4),
    ]


def test_which_constants_count():
    """Finite values only (a -Inf mask stays -Inf in float16); float32 and float64 only; values that
    round to zero only as a single value (an epsilon), not as a tensor of near-zero biases."""
    inits = [_init("mask", [-np.inf, 0.0, 1.0]), _init("shape", [1 << 20, 3], np.int64), _init("wide", 1e5, np.float64),
             _init("eps", [1e-12]), _init("biases", [1e-9, -2e-8, 1e-8]), _init("half_step", 2**-25),
             _init("rounds_up", 4e-8), _init("zero", 0.0)]
    found = fp16_constants(_graph(initializer=inits), {})
    assert [(c.tensor, c.overflows, c.vanishes) for c in found] == [
        ("wide", True, False), ("eps", False, True), ("half_step", False, True)]
    assert found[0] == Constant("wide", None, 1e5, 1)


def test_constant_warning_names_core_ml_for_vanishing_constants_only():
    """TFLite's fp16 files keep constants float16 cannot hold in float32 (converters/tflite/fp16.py), and
    coremltools computes ops reading big constants in fp32: only a vanishing epsilon hurts, in Core ML."""
    big = [Constant(f"k{i}", None, FP16_MAX * (i + 2), 1) for i in range(4)]
    eps = Constant("eps", "model/ln/eps", 1e-12, 1, "If model/branch (then_branch)")
    text = constant_warning([*big, eps], ["tflite/fp16", "coreml/fp16"])
    assert text == (
        "fp16 constants: 1 single-valued float constant(s) are at or below 2**-25 (half the smallest float16 "
        "subnormal) and round to zero in float16, where an epsilon no longer keeps a division or square root "
        "from 0: model/ln/eps (tensor eps) in If model/branch (then_branch): |x| 1e-12. Affected: coreml/fp16")
    assert constant_warning(big, ["coreml/fp16", "coreml/int8-weights", "tflite/fp16"]) is None
    assert constant_warning([eps], ["tflite/fp16"]) is None


def test_activations_and_constants_warned_apart():
    found = [Overflow("b", "scale2", 9e4), Constant("k", None, 1e-12, 1)]
    overflow, constants = fp16_warnings(found, ["tflite/fp16", "coreml/fp16"])
    assert overflow == overflow_warning(found[:1], ["tflite/fp16", "coreml/fp16"])
    assert constants == constant_warning(found[1:], ["coreml/fp16"])
    assert fp16_warnings(found[1:], ["tflite/fp16"]) == []


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
