"""The hub's final check: a graph onnx's checker rejects stops with one line at `onnx-check`,
whether the checker's validation or its full_check shape inference rejects it."""

from __future__ import annotations

import pytest

from bridge.base.errors import ConversionError
from bridge.base.tensors import TensorSpec

onnx = pytest.importorskip("onnx")
helper, TensorProto = onnx.helper, onnx.TensorProto


def test_a_graph_whose_shapes_cannot_be_inferred_stops_at_onnx_check(tmp_path):
    from bridge.converters.onnx.hub import finalize

    add = helper.make_node("Add", ["x", "y"], ["z"])  # [2, 3] + [4, 5] broadcasts nowhere
    graph = helper.make_graph([add], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
                                           helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 5])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [None, None])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    with pytest.raises(ConversionError, match=r"^the hub ONNX graph is invalid: .*Incompatible dimensions") as e:
        finalize(model, tmp_path / "hub.onnx", inputs=(TensorSpec("x", (2, 3)), TensorSpec("y", (4, 5))))
    assert e.value.stage == "onnx-check" and "\n" not in str(e.value)


def _conv_net(batch):
    """x -> Conv 8x3x3 -> Relu -> MaxPool 2 -> Flatten -> Gemm 10 -> Softmax: float tensors of
    several sizes, and one integer side branch (Shape) the probe never reads."""
    import numpy as np
    from onnx import numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("w", (8, 3, 3, 3)), ("b", (8,)), ("fc", (512, 10)), ("fb", (10,)))]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fc", "fb"], ["g"]),
             helper.make_node("Softmax", ["g"], ["y"]),
             helper.make_node("Shape", ["p"], ["shape"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10]),
                               helper.make_tensor_value_info("shape", TensorProto.INT64, [4])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_activation_bytes_are_what_the_probe_holds_for_one_sample(tmp_path):
    """The hub's float activations on one sample, from its recorded shapes, are exactly the bytes
    of the float arrays the activation-ranges probe gets back (the activation-ranges stage's
    memory estimate rests on them); a dynamic axis leaves them unknown."""
    import numpy as np

    from bridge.converters.onnx.hub import activation_bytes, finalize
    from bridge.converters.onnx.ranges import Probe

    model, *_ = finalize(_conv_net(1), tmp_path / "hub.onnx", inputs=(TensorSpec("x", (1, 3, 16, 16)),))
    probe = Probe(onnx.load(tmp_path / "hub.onnx"))
    values = probe.session.run(probe.names, {"x": np.ones((1, 3, 16, 16), np.float32)})
    held = sum(v.nbytes for v in values if v.dtype == np.float32)
    assert activation_bytes(model) == held == 4 * (2048 + 2048 + 512 + 512 + 10 + 10)

    dynamic, *_ = finalize(_conv_net("n"), tmp_path / "dynamic.onnx", inputs=(TensorSpec("x", (-1, 3, 16, 16),
                                                                                          dynamic=(0,)),))
    assert activation_bytes(dynamic) is None
