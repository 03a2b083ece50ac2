"""The hub's activation ranges on onnxruntime: int8 calibration ranges and the fp16 check share them."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.base.errors import ConversionError
from bridge.base.numerics import Constant, Overflow
from bridge.converters.onnx.ranges import activation_ranges, fp16_constants, measure

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


def overflows(path, feeds, names) -> list:
    """What the `activation-ranges` stage reports for float16 on `feeds` (parity samples only)."""
    return list(measure(str(path), feeds, [], names, fp16=True, calibrated=False).fp16)


def test_calibration_ranges_come_from_calibration_samples_only(tmp_path):
    path = tmp_path / "m.onnx"
    _graph(path)
    parity = [{"x": np.array([[10.0, 0.0, 0.0]], np.float32)}]
    ranges = measure(str(path), parity, FEEDS, {}, fp16=False, calibrated=True)
    assert ranges.calibration["a"] == (-300.0, 300.0) and ranges.fp16 == ()  # parity's 3000 never calibrates


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
    found = overflows(path, FEEDS, {"scale2": "model/amplify/mul"})
    assert found == [Overflow("b", "model/amplify/mul", 90000.0)]
    assert str(found[0]) == "model/amplify/mul (tensor b): max |x| 9e+04"


def test_inputs_beyond_fp16_are_reported_first(tmp_path):
    path = tmp_path / "m.onnx"
    _graph(path)
    found = overflows(path, [{"x": np.array([[70000.0, 0.0, 1.0]], np.float32)}], {})
    assert [(o.node, o.tensor) for o in found] == [("input", "x"), ("scale1", "a"), ("scale2", "b"), ("down", "c"),
                                                   ("back", "y")]
    assert found[0].max_abs == 70000.0 and str(found[0]) == "input x: max |x| 7e+04"


def test_nothing_found_within_range(tmp_path):
    path = tmp_path / "m.onnx"
    _graph(path)
    found = overflows(path, [{"x": np.full((1, 3), 0.5, np.float32)}], {})
    assert found == []


def test_initializer_beyond_fp16_found_whatever_the_samples(tmp_path):
    """x * 1e5 / 1e5 stays within range on small inputs; the constant does not."""
    from onnx import helper

    path = tmp_path / "m.onnx"
    big = "/gain/Constant_output_0"  # as torch and onnxslim name a folded scalar
    gain = [helper.make_node("Mul", ["x", big], ["gained"], name="gain"),
            helper.make_node("Div", ["gained", big], ["undone"], name="undo")]
    _graph(path, gain, [_init(big, 1e5)])
    found = overflows(path, [{"x": np.full((1, 3), 1e-3, np.float32)}], {"gain": "model/gain"})
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
    found = overflows(path, [{"x": np.full((1, 3), 1e-3, np.float32)}], {"neg_sanitized": "model/neg:0"})
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


@pytest.mark.parametrize("fp16", [True, False])
def test_the_hub_run_that_measures_writes_what_the_plain_run_writes(tmp_path, fp16):
    """`run_and_measure` (the hub's parity run when a route needs the ranges) writes the graph's
    own outputs, as the plain parity run does, and measures what `measure` measures (without an
    fp16 route, only the calibration samples are measured)."""
    from bridge.base.arrays import Column
    from bridge.converters.onnx.ranges import run_and_measure
    from bridge.validators.runners import run_samples

    path = tmp_path / "m.onnx"
    _graph(path)
    cal = [{"x": np.array([[2.0, -3.0, 0.5]], np.float32)}]
    (runtime, written), ranges = run_and_measure(str(path), FEEDS, cal, {}, str(tmp_path / "out"), fp16=fp16,
                                                 calibrated=True)
    _, plain = run_samples("bridge.validators.runners.onnxruntime:OnnxRuntimeRunner", str(path), FEEDS, None,
                           str(tmp_path / "plain"))
    assert runtime == "onnxruntime" and written.names == plain.names == ("y", "root") and len(written) == 2
    for name in written.names:
        np.testing.assert_allclose(np.stack(list(Column(written, name))), np.stack(list(Column(plain, name))),
                                   rtol=1e-6)
    assert ranges == measure(str(path), FEEDS, cal, {}, fp16=fp16, calibrated=True)
    assert ranges.calibration["b"] == (-270000.0, 180000.0)  # calibration samples only
    assert [o.tensor for o in ranges.fp16 if isinstance(o, Overflow)] == (["b"] if fp16 else [])
