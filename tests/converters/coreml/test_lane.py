"""Core ML lane plumbing: registry rules, preflight, the example converters."""

import numpy as np
import onnx
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

    feed = {"x": np.zeros((1, 2, 3, 4), np.float32), "s": np.zeros((1,), np.int32)}
    nodes = [helper.make_node("LRN", ["x"], ["lrn"], size=2, name="lrn"),
             helper.make_node("Unsqueeze", ["x", "axes"], ["six"], name="unsq"),
             helper.make_node("Cast", ["s"], ["f"], to=1), helper.make_node("Mul", ["x", "f"], ["scaled"], name="mul")]
    model = graph(nodes, feed, ["lrn", "six", "scaled"], {"axes": np.array([0, 5], np.int64)})
    model.graph.input[1].type.tensor_type.elem_type = onnx.TensorProto.UINT8  # an 8-bit image, say
    missing = {(u.op_type, u.nodes): u.reason for u in unsupported_ops(model)}
    input_types = "float32, float16, float64, int32, int64 or bool"
    assert missing == {(INPUT, ("s",)): f"an input type Core ML cannot take ({input_types})",
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


def test_scalar_inputs_arrive_as_one_element():
    """Core ML has no scalar inputs: a rank-0 input is declared (1,) and squeezed inside, and the
    binding hands the artifact a one-element array (`bridge validate` pairs them the same way)."""
    from bridge.base.bindings import Binding
    from bridge.validation import find_perm
    from tests.converters.coreml.harness import convert, onnxruntime, run_reference

    feed = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "p": np.array(2.5, np.float32)}
    nodes = [helper.make_node("Pow", ["x", "p"], ["y"]), helper.make_node("Range", ["p", "ten", "p"], ["r"])]
    model = graph(nodes, feed, ["y", "r"], {"ten": np.array(10, np.float32)}, opset=13)
    built, ml = converted = convert(model)
    assert [tuple(i.type.multiArrayType.shape) for i in ml.get_spec().description.input] == [(2, 3), (1,)]
    binding = Binding("p", built.inputs["p"], (1,), "fp32")
    got = run_reference(model, {"x": feed["x"], "p": binding.to_artifact(feed["p"])}, converted=converted)
    for name, want in onnxruntime(model, feed).items():
        np.testing.assert_allclose(got[name], want, rtol=1e-6, err_msg=name)
    assert find_perm((), (1,)) is None and find_perm((), (2,)) is False
