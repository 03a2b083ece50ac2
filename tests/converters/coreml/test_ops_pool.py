"""Pooling lowered to MIL.

The saved model runs in the Core ML reference executor (`harness.parity`) and is compared with
onnxruntime, or with ONNX's reference evaluator where onnxruntime departs from the spec. Cases
share one model per test: every lowering costs a ct.convert.
"""

import numpy as np
import pytest
from onnx import helper

from bridge.base.errors import ConversionError
from bridge.converters.coreml.build import build_program
from bridge.converters.coreml.ops.pool import SAME_DILATED
from bridge.converters.coreml.preflight import unsupported_ops
from tests.converters.coreml.harness import convert, graph, onnxruntime, parity, run_reference

coremltools = pytest.importorskip("coremltools")
torch = pytest.importorskip("torch")
F = torch.nn.functional

RNG = np.random.default_rng(0)


def _randn(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _parity(model, feed, expect_ops=(), want=None):
    parity(model, feed, expect_ops=expect_ops, want=want, rtol=1e-5, atol=1e-6)


def _model(op, cases, feed, x="x"):
    nodes = [helper.make_node(op, [a.pop("x", x)], [name], **a) for name, a in cases.items()]
    return graph(nodes, feed, list(cases))


# Windowed pools -------------------------------------------------------------------------------------
SHARED = {
    "strides_omitted": {"kernel_shape": [2, 3]},
    "pads": {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
    "asymmetric_pads": {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [0, 1, 2, 0]},
    "ceil_overrun_padded": {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1},
    "ceil_overrun_asymmetric": {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [0, 1, 1, 0], "ceil_mode": 1},
    "ceil_drops_window_past_input": {"kernel_shape": [1, 1], "strides": [3, 3], "ceil_mode": 1},
    "ceil_changes_nothing": {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1, "x": "x9"},
    "valid_ceil": {"kernel_shape": [2, 2], "strides": [2, 3], "auto_pad": "VALID", "ceil_mode": 1},
    "same_upper": {"kernel_shape": [2, 2], "strides": [2, 3], "auto_pad": "SAME_UPPER"},
    "same_lower": {"kernel_shape": [3, 2], "strides": [2, 2], "auto_pad": "SAME_LOWER"},
}
FEED = {"x": _randn(1, 3, 7, 8), "x9": _randn(1, 2, 9, 9)}


def test_max_pool():
    cases = {name: dict(a) for name, a in SHARED.items()}
    cases["storage_order"] = {"kernel_shape": [2, 2], "storage_order": 1}
    _parity(_model("MaxPool", cases, FEED), FEED, expect_ops=("max_pool",))


def test_average_pool_excluding_padding():
    cases = {name: dict(a) for name, a in SHARED.items()}
    _parity(_model("AveragePool", cases, FEED), FEED, expect_ops=("avg_pool",))


def test_average_pool_counting_padding():
    cases = {name: {**a, "count_include_pad": 1} for name, a in SHARED.items()
             if name not in ("ceil_overrun_padded", "ceil_overrun_asymmetric", "valid_ceil")}  # see the next two tests
    _parity(_model("AveragePool", cases, FEED), FEED, expect_ops=("avg_pool",))


def test_average_pool_counting_padding_with_ceil_follows_the_spec():
    """onnxruntime 1.23 divides ceil_mode's overrun windows by the whole kernel; the ONNX reference
    evaluator and torch count only the input and the explicit pads, as MIL's ceil_mode does."""
    from onnx.reference import ReferenceEvaluator

    cases = {"padded": {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1},
             "unpadded": {"kernel_shape": [2, 2], "strides": [2, 3], "ceil_mode": 1}}
    feed = {"x": _randn(1, 2, 8, 7)}
    model = _model("AveragePool", {k: {**a, "count_include_pad": 1} for k, a in cases.items()}, feed)
    want = dict(zip(cases, ReferenceEvaluator(model).run(None, feed), strict=True))
    np.testing.assert_allclose(want["padded"], F.avg_pool2d(torch.tensor(feed["x"]), 3, 2, 1, ceil_mode=True).numpy(),
                               rtol=1e-6)
    _parity(model, feed, expect_ops=("avg_pool",), want=want)


def _unknown_spatial_sizes(model):
    for dim, symbol in zip(model.graph.input[0].type.tensor_type.shape.dim[2:], "hw", strict=True):
        dim.dim_param = symbol
    return model


@pytest.mark.filterwarnings("ignore:Some dimensions in the input shape are unknown")
def test_ceil_mode_with_spatial_sizes_unknown_until_run_time():
    """Then MIL's own ceil_mode does the work, except where its output size rule differs from ONNX's."""
    feed = {"x": _randn(1, 2, 8, 7)}
    nodes = [helper.make_node("MaxPool", ["x"], ["max"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                              ceil_mode=1),
             helper.make_node("AveragePool", ["x"], ["avg"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)]
    model = _unknown_spatial_sizes(graph(nodes, feed, ["max", "avg"]))
    _, ml = converted = convert(model)
    assert all(op.ceil_mode.val for op in ml._mil_program.functions["main"].operations if op.op_type.endswith("pool"))
    got = run_reference(model, feed, converted=converted)
    for name, want in onnxruntime(model, feed).items():
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-6, err_msg=name)

    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[1, 1], strides=[3, 3], ceil_mode=1)
    with pytest.raises(ConversionError, match="kernel >= stride"):
        build_program(_unknown_spatial_sizes(graph([node], feed, ["y"])), coremltools.target.iOS16)


def test_pools_1d_and_3d():
    feed = {"x1": _randn(2, 3, 10), "x3": _randn(1, 2, 5, 6, 7)}
    nodes = [helper.make_node("MaxPool", ["x1"], ["max1"], kernel_shape=[3], strides=[2], pads=[1, 1], ceil_mode=1),
             helper.make_node("AveragePool", ["x1"], ["avg1"], kernel_shape=[4], strides=[3], pads=[2, 1],
                              count_include_pad=1),
             helper.make_node("MaxPool", ["x3"], ["max3"], kernel_shape=[2, 2, 3], strides=[2, 2, 2], ceil_mode=1),
             helper.make_node("AveragePool", ["x3"], ["avg3"], kernel_shape=[3, 2, 2], strides=[2, 2, 2],
                              pads=[1, 0, 1, 1, 1, 0], ceil_mode=1)]
    _parity(graph(nodes, feed, ["max1", "avg1", "max3", "avg3"]), feed, expect_ops=("max_pool", "avg_pool"))


def test_lp_pool():
    """(sum |x|^p)^(1/p) per window for p = 1, 2, 3, with padding, SAME, dilations and ceil_mode."""
    feed = {"x": _randn(1, 2, 9, 8), "x1": _randn(1, 3, 10)}
    nodes = [helper.make_node("LpPool", ["x"], ["p2"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("LpPool", ["x"], ["p3"], kernel_shape=[2, 3], p=3, auto_pad="SAME_UPPER"),
             helper.make_node("LpPool", ["x"], ["p1"], kernel_shape=[2, 2], p=1, dilations=[2, 2], ceil_mode=1,
                              strides=[2, 2]),
             helper.make_node("LpPool", ["x1"], ["p1d"], kernel_shape=[3], p=4, strides=[2])]
    _parity(graph(nodes, feed, [n.output[0] for n in nodes], opset=22), feed, expect_ops=("slice_by_index",))


def test_global_pools():
    feed = {"x1": _randn(2, 3, 5), "x2": _randn(1, 4, 3, 6), "x3": _randn(1, 2, 3, 4, 5)}
    nodes = [helper.make_node(op, [x], [f"{op}_{x}"]) for op in ("GlobalAveragePool", "GlobalMaxPool") for x in feed]
    _parity(graph(nodes, feed, [n.output[0] for n in nodes]), feed, expect_ops=("reduce_mean", "reduce_max"))


# Window by window -----------------------------------------------------------------------------------
def test_dilated_pools_2d_and_3d():
    """Dilations (MIL's pooling has none): one strided slice per kernel offset, with pads, ceil_mode
    and both averaging rules."""
    feed = {"x": _randn(1, 2, 9, 8), "x3": _randn(1, 2, 9, 8, 7)}
    dilated = {"kernel_shape": [3, 2], "strides": [2, 1], "dilations": [2, 3], "pads": [1, 0, 2, 1]}
    dilated3 = {"kernel_shape": [3, 2, 2], "strides": [2, 2, 1], "dilations": [2, 2, 3], "ceil_mode": 1}
    nodes = [helper.make_node("MaxPool", ["x"], ["max"], **dilated, ceil_mode=1),
             helper.make_node("AveragePool", ["x"], ["avg"], **dilated),
             helper.make_node("AveragePool", ["x"], ["avg_pad"], kernel_shape=[3, 2], dilations=[2, 3], ceil_mode=1,
                              count_include_pad=1),
             helper.make_node("MaxPool", ["x3"], ["max3"], **dilated3),
             helper.make_node("AveragePool", ["x3"], ["avg3"], **dilated3, pads=[1, 0, 1, 1, 1, 0]),
             helper.make_node("AveragePool", ["x3"], ["avg3_pad"], **dilated3, count_include_pad=1)]
    outputs = [n.output[0] for n in nodes]
    _parity(graph(nodes, feed, outputs, opset=19), feed, expect_ops=("slice_by_index", "maximum", "add"))


def test_average_pool_ceil_modes_mil_lacks():
    """3-D, or asymmetric pads, with ceil_mode and count_include_pad=1: MIL's ceil_mode takes
    neither, so these go window by window (the spec's divisor, as test above)."""
    from onnx.reference import ReferenceEvaluator

    feed = {"x": _randn(1, 1, 7, 7), "x3": _randn(1, 1, 6, 6, 6)}
    nodes = [helper.make_node("AveragePool", ["x3"], ["avg3"], kernel_shape=[3, 3, 3], strides=[2, 2, 2],
                              pads=[1] * 6, ceil_mode=1, count_include_pad=1),
             helper.make_node("AveragePool", ["x"], ["asym"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 0, 1],
                              ceil_mode=1, count_include_pad=1)]
    model = graph(nodes, feed, ["avg3", "asym"], opset=19)
    want = dict(zip(["avg3", "asym"], ReferenceEvaluator(model).run(None, feed), strict=True))
    _parity(model, feed, expect_ops=("slice_by_index",), want=want)


def test_max_pool_indices():
    """The argmax Indices output: row-major over the whole input, or column-major over the spatial
    dims with storage_order=1; padding never wins; ties keep the first index."""
    x = _randn(2, 3, 7, 6)
    x[0, 0, :2, :2] = 5.0  # a tie inside one window
    feed = {"x": x, "x3": _randn(1, 2, 4, 5, 6)}
    nodes = [helper.make_node("MaxPool", ["x"], ["v", "i"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("MaxPool", ["x"], ["vc", "ic"], kernel_shape=[2, 2], strides=[2, 2], storage_order=1,
                              ceil_mode=1),
             helper.make_node("MaxPool", ["x3"], ["v3", "i3"], kernel_shape=[2, 2, 3], strides=[1, 2, 2])]
    outputs = ["v", "i", "vc", "ic", "v3", "i3"]
    _parity(graph(nodes, feed, outputs, opset=12), feed, expect_ops=("select", "greater"))


# Refusals -------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Some dimensions in the input shape are unknown")
def test_window_by_window_needs_static_sizes():
    feed = {"x": _randn(1, 1, 6, 6)}
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], dilations=[2, 2])
    with pytest.raises(ConversionError, match="static sizes"):
        build_program(_unknown_spatial_sizes(graph([node], feed, ["y"])), coremltools.target.iOS16)


@pytest.mark.parametrize("op, a", [("MaxPool", {"auto_pad": "SAME_UPPER"}),
                                   ("AveragePool", {"auto_pad": "SAME_LOWER"})])
def test_dilations_onnxruntime_and_the_spec_disagree_on_are_refused_before_converting(op, a):
    """SAME_UPPER here: onnxruntime gives (8, 6), the ONNX reference evaluator (9, 8)."""
    from onnx.reference import ReferenceEvaluator

    feed = {"x": _randn(1, 2, 9, 8)}
    model = graph([helper.make_node(op, ["x"], ["y"], kernel_shape=[3, 2], dilations=[2, 3], strides=[2, 1], **a)],
                  feed, ["y"], opset=19)
    ours, spec = onnxruntime(model, feed)["y"], ReferenceEvaluator(model).run(None, feed)[0]
    assert ours.shape != spec.shape or not np.allclose(ours, spec)
    [refused] = unsupported_ops(model)
    assert (refused.op_type, refused.reason) == (op, SAME_DILATED)
    with pytest.raises(ConversionError, match="dilations"):
        build_program(model, coremltools.target.iOS16)


def test_dilated_average_counting_padding_converts_where_onnxruntime_follows_the_spec():
    """count_include_pad=1 with dilations and pads: onnxruntime 1.23 left some padding out of the
    divisor the spec counts, so the lane refused it; onnxruntime 1.26 counts it as the spec does
    (168 configurations of rank, kernel, dilation, stride, pads and ceil_mode agreed), so the lane
    converts it, checked against both."""
    from onnx.reference import ReferenceEvaluator

    feed = {"x": _randn(1, 2, 9, 8), "x3": _randn(1, 2, 9, 8, 7)}
    nodes = [helper.make_node("AveragePool", ["x"], ["avg"], kernel_shape=[3, 2], dilations=[2, 3], strides=[2, 1],
                              pads=[1, 0, 1, 1], count_include_pad=1),
             helper.make_node("AveragePool", ["x3"], ["avg3"], kernel_shape=[2, 2, 2], dilations=[2, 2, 2],
                              strides=[1, 1, 1], pads=[1, 1, 1, 1, 1, 1], count_include_pad=1, ceil_mode=1)]
    model = graph(nodes, feed, ["avg", "avg3"], opset=19)
    spec = dict(zip(["avg", "avg3"], ReferenceEvaluator(model).run(None, feed), strict=True))
    for name, got in onnxruntime(model, feed).items():
        np.testing.assert_allclose(got, spec[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert unsupported_ops(model) == []
    _parity(model, feed, expect_ops=("slice_by_index",), want=spec)
