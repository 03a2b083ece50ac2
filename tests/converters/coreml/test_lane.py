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

    nodes = [helper.make_node("Relu", ["x"], ["a"], name="r"), helper.make_node("Hardmax", ["a"], ["b"], name="h1"),
             helper.make_node("Hardmax", ["b"], ["c"], name="h2"), helper.make_node("Celu", ["c"], ["y"], name="c")]
    missing = unsupported_ops(graph(nodes, {"x": np.zeros((1, 4), np.float32)}, ["y"]))
    assert [(u.op_type, u.nodes) for u in missing] == [("Celu", ("c",)), ("Hardmax", ("h1", "h2"))]


def test_conv_relu_add():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Add", ["r", "c"], ["y"])]
    model = graph(nodes, {"x": x}, ["y"], {"w": w, "b": np.ones(4, np.float32)})
    check(model, {"x": x}, expect_ops=("conv", "relu", "add"))
