"""The TFLite preflight names every node the lane refuses, with the reason, before converting."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.base.errors import ConversionError
from bridge.converters.tflite.flatbuffer import op_counts
from bridge.converters.tflite.lane import check_ops
from bridge.converters.tflite.preflight import refused_ops, unsupported, unsupported_all
from tests.converters.tflite.helpers import cnn, to_tflite

onnx = pytest.importorskip("onnx")
helper, numpy_helper, TensorProto = onnx.helper, onnx.numpy_helper, onnx.TensorProto


def _graph(nodes, shape=(3, 3), initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_every_refused_node_named_at_once():
    model = _graph([
        helper.make_node("ArgMax", ["x"], ["a"], axis=1, select_last_index=1, name="last_max"),
        helper.make_node("Cast", ["a"], ["f"], to=TensorProto.FLOAT, name="cast"),
        helper.make_node("Einsum", ["f"], ["t"], equation="ij->ji", name="transpose_as_einsum"),
        helper.make_node("Det", ["t"], ["y"], name="det"),
    ], shape=(4, 4))
    refused = {r.op_type: r for r in refused_ops(model, {"det": "model/det:0"})}
    assert set(refused) == {"ArgMax", "Einsum"} or set(refused) >= {"ArgMax", "Einsum"}
    assert refused["ArgMax"].nodes == ("last_max",) and "select_last_index" in refused["ArgMax"].reason
    assert "custom" in refused["Einsum"].reason.lower()  # onnx2tf would write ONNX_EINSUM, which no runtime has
    for r in refused.values():
        assert str(r).startswith(f"{r.op_type} (")


def test_the_declared_preflight_is_quick_until_it_finds_something(tmp_path):
    """Before every conversion: op types and the lane's own table; onnx2tf's node validators only once
    that finds something, and then they name every refused node. `bridge inspect` always asks them."""
    argmax = helper.make_node("ArgMax", ["x"], ["a"], axis=1, select_last_index=1, name="last_max")
    cast = helper.make_node("Cast", ["a"], ["y"], to=TensorProto.FLOAT, name="cast")
    attribute_only = tmp_path / "attribute_only.onnx"
    onnx.save(_graph([argmax, cast], shape=(4, 4)), attribute_only)
    assert unsupported(str(attribute_only), {}) == []
    [found] = unsupported_all(str(attribute_only), {"last_max": "model/argmax"})
    assert (found.op_type, found.nodes) == ("ArgMax", ("model/argmax",)) and "select_last_index" in found.reason

    swish = helper.make_node("Swish", ["f"], ["y"], name="act")
    both = tmp_path / "both.onnx"
    model = _graph([argmax, helper.make_node("Cast", ["a"], ["f"], to=TensorProto.FLOAT, name="cast"), swish],
                   shape=(4, 4))
    model.opset_import[0].version = 24
    onnx.save(model, both)
    assert {u.op_type for u in unsupported(str(both), {})} == {"ArgMax", "Swish"}


def test_supported_graph_and_patterns_a_rewrite_fixes_pass():
    conv = helper.make_node("Conv", ["x", "w"], ["c"], auto_pad="SAME_LOWER", strides=[2, 2], name="conv")
    pool = helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[3, 3], dilations=[2, 2], pads=[2, 2, 2, 2],
                            name="dilated_pool")
    elu = helper.make_node("Elu", ["p"], ["y"], alpha=2.0, name="elu")
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    assert refused_ops(_graph([conv, pool, elu], shape=(1, 3, 10, 10), initializers=[w])) == []
    assert refused_ops(cnn()) == []


def test_custom_and_flex_ops_in_a_file_are_refused(tmp_path):
    """onnx2tf 2.x writes no Flex ops, but a CUSTOM fallback can slip through: a file needing either
    is refused (Flex only without --allow-flex)."""
    from bridge.converters.tflite import flatbuffer as fbu

    path = to_tflite(cnn(), tmp_path)
    check_ops(op_counts(path.read_bytes()), allow_flex=False)
    for name in ("FlexErf", "ONNX_LPPOOL"):
        model = fbu.load(path.read_bytes())
        model.operatorCodes[0].customCode = name
        model.operatorCodes[0].builtinCode = fbu.schema().BuiltinOperator.CUSTOM
        model.operatorCodes[0].deprecatedBuiltinCode = fbu.schema().BuiltinOperator.CUSTOM
        counts = op_counts(fbu.save(model))
        assert name in counts
        if name.startswith("Flex"):
            with pytest.raises(ConversionError, match="Flex \\(Select TF\\) ops Erf"):
                check_ops(counts, allow_flex=False)
            check_ops(counts, allow_flex=True)
        else:
            with pytest.raises(ConversionError, match="custom ops ONNX_LPPOOL"):
                check_ops(counts, allow_flex=True)


def test_combinations_onnx2tf_lets_through_but_that_fail_later_are_refused():
    """Measured on onnx's node tests: onnx2tf refuses a dilated AveragePool only while lowering,
    writes a cast to float16 as float32, and ai-edge-litert's CUMSUM, MAXIMUM and MINIMUM take no
    float64."""
    axis = numpy_helper.from_array(np.array(0, np.int64), "axis")
    model = _graph([
        helper.make_node("AveragePool", ["x"], ["p"], kernel_shape=[2, 2], dilations=[2, 2], name="pool"),
        helper.make_node("Cast", ["p"], ["h"], to=TensorProto.FLOAT16, name="to_half"),
        helper.make_node("Cast", ["h"], ["d"], to=TensorProto.DOUBLE, name="to_double"),
        helper.make_node("CumSum", ["d", "axis"], ["s"], name="running_sum"),
        helper.make_node("Max", ["s", "d"], ["y"], name="larger"),
    ], shape=(1, 1, 6, 6), initializers=[axis])
    refused = {r.op_type: r for r in refused_ops(model)}
    assert refused["AveragePool"].nodes == ("pool",) and "dilated" in refused["AveragePool"].reason
    assert refused["Cast"].nodes == ("to_half",) and "float16" in refused["Cast"].reason
    assert refused["CumSum"].nodes == ("running_sum",) and "float64" in refused["CumSum"].reason
    assert refused["Max"].nodes == ("larger",) and "float64" in refused["Max"].reason
    undilated = _graph([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], name="pool")],
                       shape=(1, 1, 6, 6))
    assert refused_ops(undilated) == []


def test_lstm_and_rnn_are_refused_their_files_keep_state(tmp_path):
    """onnx2tf 2.6.9 lowers LSTM and RNN to TFLite sequence ops whose state lives in variable tensors:
    the file is right on its first call only (node test test_rnn_seq_length: rel. L2 ~0.2-0.3 from
    the second call on). Refused up front; and a file with a stateful op is never shipped. (onnx2tf's
    GRU is plain ops, its zero initial state a variable tensor nothing writes: it passes.)"""
    from bridge.converters.tflite import flatbuffer as fbu
    from bridge.converters.tflite.direct import convert_float
    from bridge.converters.tflite.layout import InputPlan

    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.5).astype(np.float32), n)
             for n, s in (("w", [1, 4, 3]), ("r", [1, 4, 4]))]
    rnn = _graph([helper.make_node("RNN", ["x", "w", "r"], ["seq", "y"], hidden_size=4, name="rnn")],
                 shape=(2, 3, 3), initializers=inits)
    [refused] = refused_ops(rnn)
    assert refused.op_type == "RNN" and refused.nodes == ("rnn",) and "state" in refused.reason
    path = convert_float(rnn, tmp_path / "onnx2tf", InputPlan(("x",), (), {"x": None}, {"x": "source"}), {}).path
    assert fbu.stateful_ops(fbu.op_counts(path.read_bytes())) == ["UNIDIRECTIONAL_SEQUENCE_RNN"]  # spared the user

    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner()
    x = rng.standard_normal((2, 3, 3)).astype(np.float32)
    first, second = runner(x=x)["y"], runner(x=x)["y"]
    assert not np.allclose(first, second, rtol=1e-3)  # same input, another answer: the state carried over


def test_the_lane_itself_never_ships_a_stateful_file(tmp_path):
    """Called without its preflight (as a variant route would), the lane still refuses: onnx2tf's file
    has a stateful op, and the thorough check names the node."""
    from bridge.base.lane import LaneRequest
    from bridge.base.tensors import TensorSpec
    from bridge.converters.tflite.lane import convert

    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.5).astype(np.float32), n)
             for n, s in (("w", [1, 4, 3]), ("r", [1, 4, 4]))]
    onnx.save(_graph([helper.make_node("RNN", ["x", "w", "r"], ["seq", "y"], hidden_size=4, name="rnn")],
                     shape=(2, 3, 3), initializers=inits), tmp_path / "hub.onnx")
    req = LaneRequest(hub_path=str(tmp_path / "hub.onnx"), workdir=str(tmp_path), name="rnn", modes=("fp32",),
                      framework="onnx", inputs=(TensorSpec("x", (2, 3, 3)),), outputs=(TensorSpec("y", (1, 3, 4)),))
    with pytest.raises(ConversionError, match=r"RNN \(rnn; .*state") as e:
        convert(req)
    assert e.value.stage == "tflite-preflight"
    assert not list(tmp_path.glob("*.tflite"))


def _resize(name: str, shape, scales=None, sizes=None, **attrs):
    inits = [numpy_helper.from_array(np.array(scales or sizes, np.float32 if scales else np.int64), "factors")]
    inputs = ["x", "", "factors"] if scales else ["x", "", "", "factors"]
    model = _graph([helper.make_node("Resize", inputs, ["y"], name=name, **attrs)], shape=shape, initializers=inits)
    model.opset_import[0].version = 19  # antialias, axes and keep_aspect_ratio_policy are opset 18's
    return model


@pytest.mark.parametrize("model, why", [
    (_resize("uneven", (1, 1, 2, 4), scales=[1, 1, 0.6, 0.6], mode="linear"), "size ratio"),
    (_resize("uneven_nearest", (1, 1, 2, 4), scales=[1, 1, 0.6, 0.6], mode="nearest"), "size ratio"),
    (_resize("aa", (1, 1, 4, 4), sizes=[1, 1, 3, 3], mode="cubic", antialias=1), "antialias"),
    (_resize("one", (1, 1, 4, 4), sizes=[1, 1, 3, 1], mode="linear",
             coordinate_transformation_mode="pytorch_half_pixel"), "length 1"),
    # test_resize_downsample_sizes_nearest (rel. L2 0.75): ONNX's round_prefer_floor, TFLite's floor
    (_resize("nearest_4_to_3", (1, 1, 2, 4), sizes=[1, 1, 1, 3], mode="nearest"), "nearest_mode=round_prefer_floor"),
    (_resize("nearest_half", (1, 1, 2, 4), scales=[1, 1, 0.5, 0.5], mode="nearest"), "nearest_mode"),
    (_resize("nearest_2_to_3", (1, 1, 2, 2), sizes=[1, 1, 3, 3], mode="nearest",
             coordinate_transformation_mode="asymmetric"), "under asymmetric"),
    (_resize("floor_2_to_4", (1, 1, 2, 2), sizes=[1, 1, 4, 4], mode="nearest", nearest_mode="floor"), "floor"),
    # test_resize_downsample_sizes_nearest_not_larger: onnx2tf makes [1, 3] where ONNX makes [1, 2]
    (_resize("not_larger", (1, 1, 2, 4), sizes=[1, 3], mode="nearest", axes=[2, 3],
             keep_aspect_ratio_policy="not_larger"), "keep_aspect_ratio_policy=not_larger"),
    # test_resize_upsample_scales_nearest_axes_3_2: onnx2tf makes [1, 1, 6, 4] where ONNX makes [1, 1, 4, 6]
    (_resize("axes_3_2", (1, 1, 2, 2), scales=[3, 2], mode="nearest", axes=[3, 2]), "axis order"),
])
def test_resize_onnx2tf_gets_wrong_is_refused(model, why):
    """Measured on onnx's node tests (rel. L2 0.07-0.75 with parity failing, or another output
    shape; onnx2tf 2.6.9 raising nothing): downsampling by scales that do not divide the input,
    with antialias, or to one pytorch_half_pixel sample; nearest where TFLite's floor picks other
    samples than ONNX's nearest_mode; keep_aspect_ratio_policy; axes out of order."""
    [refused] = refused_ops(model)
    assert refused.op_type == "Resize" and why in refused.reason and refused.nodes == (model.graph.node[0].name,)


@pytest.mark.parametrize("model", [
    _resize("up", (1, 1, 2, 4), scales=[1, 1, 2, 2], mode="cubic"),
    _resize("even", (1, 1, 4, 4), sizes=[1, 1, 3, 3], mode="cubic"),
    # nearest where TFLite's floor picks the samples ONNX's rounding picks (measured: exact match)
    _resize("nearest_up_2", (1, 1, 2, 2), scales=[1, 1, 2, 2], mode="nearest"),
    _resize("nearest_axes_2_3", (1, 1, 2, 2), scales=[2, 3], mode="nearest", axes=[2, 3]),
    _resize("nearest_half_asymmetric", (1, 1, 2, 4), scales=[1, 1, 0.5, 0.5], mode="nearest",
            coordinate_transformation_mode="asymmetric"),
    _resize("nearest_4_to_3_prefer_ceil", (1, 1, 2, 4), sizes=[1, 1, 1, 3], mode="nearest",
            nearest_mode="round_prefer_ceil"),
    _resize("same_aspect", (1, 1, 2, 4), sizes=[1, 2], mode="nearest", axes=[2, 3], nearest_mode="round_prefer_ceil",
            keep_aspect_ratio_policy="not_larger"),
])
def test_resizes_that_pass_parity_on_the_node_tests_are_not_refused(model):
    assert refused_ops(model) == []


def test_one_hot_of_float_indices_is_refused():
    """test_onehot_with_axis: rel. L2 0.63 at onnx->target; the same graph over int64 indices passes."""
    def one_hot(dtype):
        inits = [numpy_helper.from_array(np.array(10, np.float32), "depth"),
                 numpy_helper.from_array(np.array([1, 3], np.float32), "values")]
        graph = helper.make_graph([helper.make_node("OneHot", ["i", "depth", "values"], ["y"], axis=1, name="hot")],
                                  "g", [helper.make_tensor_value_info("i", dtype, [2, 3])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=8)

    [refused] = refused_ops(one_hot(TensorProto.FLOAT))
    assert (refused.op_type, refused.nodes) == ("OneHot", ("hot",)) and "float indices" in refused.reason
    assert refused_ops(one_hot(TensorProto.INT64)) == []


def _concat(rank: int) -> onnx.ModelProto:
    shape = [2, 3, 2, 1, 2, 3, 2][:rank]
    inits = [numpy_helper.from_array(np.ones(shape, np.float32), "c")]
    return _graph([helper.make_node("Concat", ["x", "c"], ["y"], axis=1, name="cat")], shape=shape, initializers=inits)


def test_concat_above_xnnpack_rank_is_refused(tmp_path):
    """onnx's *_NCd1d2d3d4d5 loss tests (rank 7): the file runs on TFLite's plain kernels and XNNPACK,
    the default delegate, fails to prepare it. If the second part fails, XNNPACK takes rank 7 now:
    drop the refusal."""
    from ai_edge_litert import interpreter as litert

    [refused] = refused_ops(_concat(7))
    assert (refused.op_type, refused.nodes) == ("Concat", ("cat",)) and "XNNPACK" in refused.reason
    assert refused_ops(_concat(6)) == []
    path = str(to_tflite(_concat(7), tmp_path))
    plain = litert.Interpreter(model_path=path,
                               experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    plain.allocate_tensors()
    plain.invoke()
    with pytest.raises(RuntimeError, match="XNNPack"):
        litert.Interpreter(model_path=path).allocate_tensors()
