"""An ONNX source that names its dims ("batch", "sequence") on a static run: the lane writes the
static sizes into the graph and folds its shape arithmetic before onnx2tf, which lowers that
arithmetic over named dims wrongly."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.base.tensors import TensorSpec
from bridge.converters.tflite.lane import static_input_dims
from tests.converters.tflite.helpers import to_tflite

onnx = pytest.importorskip("onnx")
helper, TensorProto = onnx.helper, onnx.TensorProto

MASK = np.array([[1, 0, 1, 1, 0, 1]], np.int64)
SPEC = TensorSpec("mask", (1, 6), "int64")


def _flattened_mask() -> onnx.ModelProto:
    """BERT's attention-mask pattern (seen in all-MiniLM-L6-v2 and bert-tiny exports): Flatten with
    axis 2 of a rank-2 [batch, sequence] tensor, giving [batch * sequence, 1]."""
    nodes = [helper.make_node("Cast", ["mask"], ["f"], to=TensorProto.FLOAT, name="cast"),
             helper.make_node("Flatten", ["f"], ["y"], axis=2, name="flatten")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("mask", TensorProto.INT64,
                                                                         ["batch", "sequence"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _run(path) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(path)).get_signature_runner()(mask=MASK)["y"]


def test_onnx2tf_still_gets_named_dims_wrong(tmp_path):
    """When onnx2tf 2.x lowers this right, the lane can stop pinning dims."""
    path = to_tflite(_flattened_mask(), tmp_path)
    with pytest.raises(RuntimeError, match="num_input_elements != num_output_elements"):
        _run(path)


def test_pinned_and_folded_the_file_runs_and_matches(tmp_path):
    model, pinned = static_input_dims(_flattened_mask(), (SPEC,))
    assert pinned == 2
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [1, 6]
    y = _run(to_tflite(model, tmp_path))
    assert y.shape == (6, 1) and np.array_equal(y, MASK.reshape(6, 1).astype(np.float32))


def test_dynamic_axes_and_fixed_dims_are_left_alone():
    """`--dynamic mask:1` keeps the sequence axis named; a dim the graph already fixes is not touched,
    and a graph with nothing to pin is returned as it was (no second onnxslim run)."""
    dynamic = (TensorSpec("mask", (1, 6), "int64", dynamic=(1,)),)
    model, pinned = static_input_dims(_flattened_mask(), dynamic)
    assert pinned == 1
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_value == 1 and dims[1].dim_param == "sequence"
    again, none = static_input_dims(model, dynamic)
    assert none == 0 and again is model
