"""Core ML lane plumbing: registry rules, preflight, the example converters."""

import numpy as np
import pytest
from onnx import helper

from bridge.converters.coreml.registry import lookup, register
from tests.converters.coreml.harness import check, graph

coremltools = pytest.importorskip("coremltools")


def test_registry_refuses_duplicates_and_picks_by_opset():
    @register("BridgeTestOp", since=1)
    def v1(ctx, node):
        pass

    @register("BridgeTestOp", since=13)
    def v13(ctx, node):
        pass

    assert lookup("BridgeTestOp", 11) is v1 and lookup("BridgeTestOp", 17) is v13
    with pytest.raises(ValueError, match="registered twice"):
        register("BridgeTestOp", since=13)(v1)


def test_preflight_lists_every_unsupported_op():
    from bridge.converters.coreml.preflight import unsupported_ops

    nodes = [helper.make_node("Relu", ["x"], ["a"], name="r"), helper.make_node("Det", ["a"], ["b"], name="d1"),
             helper.make_node("Det", ["a"], ["c"], name="d2"), helper.make_node("Unique", ["a"], ["y"], name="u")]
    missing = unsupported_ops(graph(nodes, {"x": np.zeros((3, 3), np.float32)}, ["b", "c", "y"]))
    assert [(u.op_type, u.nodes, u.reason) for u in missing] == [("Det", ("d1", "d2"), "no Core ML converter"),
                                                                 ("Unique", ("u",), "no Core ML converter")]


def test_preflight_names_refused_attributes_inputs_and_ranks():
    """A converter that exists but not for these attributes, a scalar graph input, a rank-6 result:
    all refused by name before anything converts, each with its reason."""
    from bridge.converters.coreml.preflight import INPUT, unsupported_ops

    feed = {"x": np.zeros((1, 2, 3, 4), np.float32), "s": np.zeros((), np.float32)}
    nodes = [helper.make_node("LRN", ["x"], ["lrn"], size=2, name="lrn"),
             helper.make_node("Unsqueeze", ["x", "axes"], ["six"], name="unsq"),
             helper.make_node("Mul", ["x", "s"], ["scaled"], name="mul")]
    model = graph(nodes, feed, ["lrn", "six", "scaled"], {"axes": np.array([0, 5], np.int64)})
    missing = {(u.op_type, u.nodes): u.reason for u in unsupported_ops(model)}
    assert missing == {(INPUT, ("s",)): "a rank-0 input (Core ML inputs have rank 1 to 5)",
                       ("LRN", ("lrn",)): "size=2 (even sizes centre the window differently in Core ML)",
                       ("Unsqueeze", ("unsq",)): "a rank-6 output (Core ML tensors have rank 5 at most)"}


def test_conv_relu_add():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Add", ["r", "c"], ["y"])]
    model = graph(nodes, {"x": x}, ["y"], {"w": w, "b": np.ones(4, np.float32)})
    check(model, {"x": x}, expect_ops=("conv", "relu", "add"))
