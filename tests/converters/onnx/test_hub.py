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
