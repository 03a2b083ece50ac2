"""The hub's shape folding (converters/onnx/shapes.py) on small graphs built here: what each of its
three steps contributes, and that the folded graph computes what the original did."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from bridge.base.tensors import TensorSpec

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def attention_reshape(dims=("batch", "seq", 8)):
    """x [batch, seq, 8] -> [batch, seq, 2, 4] -> transposed -> back, with every target shape
    read from x at run time (Shape -> Gather -> Unsqueeze -> Concat), as torch exports attention."""
    n = helper.make_node
    i64 = lambda *v: numpy_helper.from_array(np.asarray(v, np.int64))  # noqa: E731
    inits = [i64(0), i64(1), i64(2), i64(4), i64(8)]
    for t, name in zip(inits, ("zero", "one", "two", "four", "eight"), strict=True):
        t.name = name
    nodes = [n("Shape", ["x"], ["s"]), n("Gather", ["s", "zero"], ["b"], axis=0),
             n("Gather", ["s", "one"], ["t"], axis=0),
             n("Concat", ["b", "t", "two", "four"], ["split_shape"], axis=0),
             n("Reshape", ["x", "split_shape"], ["heads"]), n("Transpose", ["heads"], ["th"], perm=[0, 2, 1, 3]),
             n("Shape", ["th"], ["s2"]), n("Gather", ["s2", "zero"], ["b2"], axis=0),
             n("Concat", ["b2", "eight", "t"], ["flat_shape"], axis=0),  # t: the sequence, read earlier
             n("Transpose", ["th"], ["back"], perm=[0, 3, 1, 2]), n("Reshape", ["back", "flat_shape"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def simplify(model):
    from bridge.converters.onnx.hub import simplify as hub_simplify

    return hub_simplify(model)


def run(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def ops(model) -> list[str]:
    return [n.op_type for n in model.graph.node]


def test_fixed_inputs_fold_every_shape_subgraph():
    from bridge.converters.onnx.shapes import fold

    model = attention_reshape()
    x = np.random.default_rng(0).standard_normal((1, 6, 8)).astype(np.float32)
    want = run(model, x)
    folded, record = fold(model, [TensorSpec("x", (1, 6, 8))], simplify)
    assert "Shape" not in ops(folded) and "Concat" not in ops(folded)
    assert record.written == ("x",) and record.inputs == {"x": [1, 6, 8]} and record.shape_ops_left == {}
    assert record.removed["Shape"] == 2 and record.symbolic == "not needed"
    np.testing.assert_array_equal(run(folded, x), want)


def test_a_dynamic_axis_keeps_its_symbol_and_the_rest_folds():
    """With the sequence dynamic, the batch and head reads fold and the reshapes keep -1 for the
    sequence (onnxruntime's symbolic inference runs first; the BERT export in
    tests/e2e/test_shape_folding.py is where onnx's own inference alone would stop). Two sequence
    lengths give the original's numbers."""
    from bridge.converters.onnx.shapes import fold

    model = attention_reshape()
    folded, record = fold(attention_reshape(), [TensorSpec("x", (1, 6, 8), dynamic=(1,))], simplify)
    assert record.inputs == {"x": [1, "seq", 8]} and record.symbolic == "used"
    assert record.shape_ops_left == {} and ops(folded) == ["Reshape", "Transpose", "Reshape"]
    for seq in (6, 11):
        x = np.random.default_rng(seq).standard_normal((1, seq, 8)).astype(np.float32)
        np.testing.assert_array_equal(run(folded, x), run(model, x))


def test_fix_inputs_names_a_dynamic_axis_the_source_left_unnamed_and_drops_stale_shapes():
    from bridge.converters.onnx.shapes import fix_inputs

    model = attention_reshape(dims=(None, None, 8))
    model.graph.value_info.append(helper.make_tensor_value_info("heads", TensorProto.FLOAT, ["batch", "seq", 2, 4]))
    assert fix_inputs(model, [TensorSpec("x", (2, 5, 8), dynamic=(1,)), TensorSpec("other", (1,))]) == ("x",)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value or d.dim_param for d in dims] == [2, "x_1", 8] and not model.graph.value_info
    assert fix_inputs(model, [TensorSpec("x", (2, 5, 8), dynamic=(1,))]) == ()  # already written: unchanged


def test_an_input_of_another_rank_is_left_alone():
    from bridge.converters.onnx.shapes import fix_inputs

    model = attention_reshape()
    assert fix_inputs(model, [TensorSpec("x", (1, 6))]) == ()
    assert [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim][:2] == ["batch", "seq"]


def _one_node(node, inputs, outputs, inits=(), opset=18):
    graph = helper.make_graph([node], "g", inputs, outputs, initializer=list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def test_output_shapes_agree_with_onnx_inference_after_onnxslim():
    """onnxslim 0.1.98 declares an uneven Split(num_outputs=4) of 7 as four [1] outputs; the
    checker (full_check) rejects that, and onnx's own inference says [2, 2, 2, 1]."""
    from bridge.converters.onnx.shapes import fold

    outs = [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [2 if i < 3 else 1]) for i in range(4)]
    model = _one_node(helper.make_node("Split", ["x"], [o.name for o in outs], num_outputs=4),
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [7])], outs)
    folded, _ = fold(model, [TensorSpec("x", (7,))], simplify)
    assert [o.type.tensor_type.shape.dim[0].dim_value for o in folded.graph.output] == [2, 2, 2, 1]
    onnx.checker.check_model(folded, full_check=True)


def test_resize_with_axes_simplifies():
    """onnxslim 0.1.98 fails on a Resize with `axes` (it writes the declared output dims back by
    position); the hub simplifies it again without them and onnx's inference restates them."""
    from bridge.converters.onnx.shapes import fold

    sizes = numpy_helper.from_array(np.asarray([7, 8], np.int64), "sizes")
    model = _one_node(helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], axes=[2, 3], mode="nearest"),
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 7, 8])], [sizes])
    x = np.arange(4, dtype=np.float32).reshape(1, 1, 2, 2)
    want = run(model, x)
    folded, _ = fold(model, [TensorSpec("x", (1, 1, 2, 2))], simplify)
    assert [d.dim_value for d in folded.graph.output[0].type.tensor_type.shape.dim] == [1, 1, 7, 8]
    np.testing.assert_array_equal(run(folded, x), want)
