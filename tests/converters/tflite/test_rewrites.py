"""The TFLite lane's ONNX rewrites, each checked against onnx2tf itself.

Every case is a small graph onnx2tf (2.6.9, flatbuffer_direct, as the lane runs it) lowers wrongly
or refuses. One test shows it still does, so it fails the day onnx2tf fixes the pattern and the pass
can go; the next shows the rewritten graph keeps onnxruntime's result and converts to a TFLite model
that matches it on ai-edge-litert.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

from bridge.converters.onnx.graph import tensor_types
from bridge.converters.tflite import rewrites
from bridge.converters.tflite.rewrites import PIPELINE, apply_rewrites
from tests.conftest import artifact, bridge, report, write_module

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx2tf")
pytest.importorskip("ai_edge_litert.interpreter")
helper, numpy_helper, TensorProto = onnx.helper, onnx.numpy_helper, onnx.TensorProto

OPSET = 17  # the hub's opset
BROKEN = 1e-3  # relative L2 error onnx2tf's TFLite shows without the rewrite
SAME_GRAPH = 1e-6  # onnxruntime, rewritten vs original graph
TFLITE = 1e-5  # TFLite vs onnxruntime after the rewrite
DYNAMIC = 5  # the size fixtures run their dynamic dims at (onnx2tf traces them at 1)


def _graph(nodes, shape, initializers=(), opset=OPSET) -> onnx.ModelProto:
    """A one-input ("x"), one-output ("y") float graph, shapes inferred and checked."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "fixture", [x], [y], list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    return model


def _node(op: str, shape, *extra_inputs, initializers=(), **attrs) -> onnx.ModelProto:
    node = helper.make_node(op, ["x", *extra_inputs], ["y"], name=op.lower(), **attrs)
    return _graph([node], shape, initializers)


def _einsum(*equations: str, shape, w_shape=None) -> onnx.ModelProto:
    """A chain of Einsums, each reading the previous result (first x) and, for a second operand,
    a constant "w" of `w_shape`, or x again where `w_shape` is None."""
    w = np.random.default_rng(1).standard_normal(w_shape or [1]).astype(np.float32)
    names = ["x", *(f"e{k}" for k in range(1, len(equations))), "y"]
    second = ["w" if w_shape else "x"]
    nodes = [helper.make_node("Einsum", [names[k], *second[:eq.count(",")]], [names[k + 1]], name=f"einsum{k}",
                              equation=eq) for k, eq in enumerate(equations)]
    return _graph(nodes, shape, [numpy_helper.from_array(w, "w")] if w_shape else [])


def _conv(shape, **attrs) -> onnx.ModelProto:
    weight = np.random.default_rng(1).standard_normal([5, shape[1], 3, 3]).astype(np.float32)
    return _node("Conv", shape, "w", initializers=[numpy_helper.from_array(weight, "w")], **attrs)


def _recurrent(op: str, gates: int, hidden: int, bias: bool = False) -> onnx.ModelProto:
    """`op` over x [seq 2, batch 3, input 3] yielding its last hidden state Y_h only (output "y")."""
    rng = np.random.default_rng(1)
    weights = {"w": [1, gates * hidden, 3], "r": [1, gates * hidden, hidden], "b": [1, 2 * gates * hidden]}
    names = ["w", "r", "b"] if bias else ["w", "r"]
    inits = [numpy_helper.from_array((rng.standard_normal(weights[n]) * 0.5).astype(np.float32), n) for n in names]
    node = helper.make_node(op, ["x", *names], ["", "y"], hidden_size=hidden, name=op.lower())
    return _graph([node], [2, 3, 3], inits)


@dataclass(frozen=True)
class Case:
    name: str
    rewrite: str
    build: Callable[[], onnx.ModelProto]
    fails_with: str | None = None  # the error, where onnx2tf or the runtime fails loudly instead of silently
    count: int = 1  # nodes the rewrite changes
    broken: float = BROKEN  # rel. L2 onnx2tf's file exceeds without the rewrite (1e-4: bridge's fp32 bar)
    then: tuple[str, ...] = ()  # passes later in the pipeline that take the rewrite's output further

    @property
    def applied(self) -> list[str]:
        return [f"{self.rewrite} x{self.count}", *(f"{p} x{self.count}" for p in self.then)]


def _einsum_case(name: str, *equations: str, shape, w_shape=None, **options) -> Case:
    return Case(name, "einsum-as-matmul", lambda: _einsum(*equations, shape=shape, w_shape=w_shape), **options)


CASES = [
    Case("conv-same-lower", "explicit-auto-pad", lambda: _conv(
        [1, 4, 10, 7], strides=[2, 2], auto_pad="SAME_LOWER"), fails_with="SAME_LOWER is not supported"),
    # onnx2tf lowers an explicitly padded LpPool to a CUSTOM op no stock runtime has
    Case("lppool-same-pads", "lppool-explicit-pad", lambda: _node(
        "LpPool", [1, 4, 10, 7], kernel_shape=[3, 3], pads=[1, 1, 1, 1], p=2), fails_with="ONNX_LPPOOL"),
    # SAME LpPool: lowered as SAME average pooling times the kernel size, border windows divided by
    # their in-bounds count; spelled out, it becomes a zero Pad (lppool-explicit-pad)
    Case("lppool-same-upper", "explicit-auto-pad", lambda: _node(
        "LpPool", [1, 3, 7, 6], kernel_shape=[3, 2], auto_pad="SAME_UPPER", p=2), then=("lppool-explicit-pad",)),
    Case("lppool-same-lower", "explicit-auto-pad", lambda: _node(
        "LpPool", [1, 3, 7, 6], kernel_shape=[3, 2], strides=[2, 1], auto_pad="SAME_LOWER", p=3),
        then=("lppool-explicit-pad",)),
    Case("maxpool-dilations", "maxpool-dilations", lambda: _node(
        "MaxPool", [1, 3, 9, 9], kernel_shape=[3, 3], dilations=[2, 2], pads=[1, 1, 1, 1], strides=[2, 1],
        ceil_mode=1), fails_with="dilations must be"),
    # a matrix product with a shared 2-D weight and a dynamic dim: the file cannot be sized at run time
    _einsum_case("einsum-shared-weight-dynamic", "bij,jk->bik", shape=[2, "T", 7], w_shape=[7, 3],
                 fails_with="reshape"),
    Case("elu-alpha", "elu-as-selu", lambda: _node("Elu", [3, 4, 5], alpha=2.0)),
    # a GRU yielding Y_h only, with a bias: a file XNNPACK cannot size
    Case("gru-y-h-only", "gru-named-outputs", lambda: _recurrent("GRU", 3, 3, bias=True),
         fails_with="failed to reshape"),
    # onnx2tf takes a missing Hardmax axis as 1 (the default before opset 13; -1 since)
    Case("hardmax-default-axis", "explicit-default-axis", lambda: _node("Hardmax", [3, 4, 5])),
    # TFLite's approximate GELU kernel approximates tanh GELU again: rel. L2 ~2e-4, over the fp32 bar
    Case("gelu-tanh", "gelu-tanh-as-formula", lambda: _graph(
        [helper.make_node("Gelu", ["x"], ["y"], approximate="tanh", name="gelu")], [3, 4, 5], opset=20),
        broken=1e-4),
]


# --- runners ----------------------------------------------------------------------------------------


def _feed(model) -> dict[str, np.ndarray]:
    shape = [d.dim_value or DYNAMIC for d in model.graph.input[0].type.tensor_type.shape.dim]
    return {"x": np.random.default_rng(0).standard_normal(shape).astype(np.float32)}


def _onnxruntime(model, feed) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["y"], feed)[0]


def _tflite(model, feed, workdir, reference: np.ndarray) -> np.ndarray:
    """onnx2tf as the lane runs it (in memory, flatbuffer_direct, x kept channel-first), run on
    ai-edge-litert as bridge's runner runs it (XNNPACK; dynamic dims sized before allocation). The
    output comes back in the layout, channel-first or channel-last, closest to `reference`: where
    even that is far off, no layout change explains it."""
    from bridge.converters.tflite.direct import convert_float
    from bridge.converters.tflite.layout import CHANNEL_LAST, InputPlan
    from bridge.validators.runners.tflite import TFLiteRunner

    plan = InputPlan(("x",), (), {"x": None}, {"x": "source"})
    fp32 = convert_float(copy.deepcopy(model), workdir / "onnx2tf", plan, {})
    runner = TFLiteRunner()
    runner.load(str(fp32.path))
    y = runner.infer(feed)["y"]
    layouts = [y] + ([y.transpose(np.argsort(CHANNEL_LAST[y.ndim]))] if y.ndim in CHANNEL_LAST else [])
    fitting = [c for c in layouts if c.shape == reference.shape]
    return min(fitting, key=lambda c: _rel_l2(c, reference)) if fitting else y


def _rel_l2(actual: np.ndarray, reference: np.ndarray) -> float:
    assert actual.shape == reference.shape, f"shape {actual.shape} != {reference.shape}"
    diff = np.linalg.norm(actual.astype(np.float64) - reference)
    return float(diff / max(np.linalg.norm(reference.astype(np.float64)), 1e-30))


# --- tests ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_onnx2tf_still_gets_it_wrong(case: Case, tmp_path):
    """If this fails, onnx2tf lowers the pattern right now: drop the case, and the pass with its
    last case."""
    model = case.build()
    feed = _feed(model)
    expected = _onnxruntime(model, feed)
    if case.fails_with:
        with pytest.raises(Exception, match=case.fails_with):
            _tflite(model, feed, tmp_path, expected)
        return
    got = _tflite(model, feed, tmp_path, expected)
    assert got.shape != expected.shape or _rel_l2(got, expected) > case.broken


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_rewrite_matches_onnxruntime_in_tflite(case: Case, tmp_path):
    model = case.build()
    feed = _feed(model)
    rewritten = copy.deepcopy(model)
    assert apply_rewrites(rewritten) == case.applied
    onnx.checker.check_model(rewritten, full_check=True)
    expected = _onnxruntime(model, feed)
    assert _rel_l2(_onnxruntime(rewritten, feed), expected) < SAME_GRAPH
    assert _rel_l2(_tflite(rewritten, feed, tmp_path, expected), expected) < TFLITE


# Patterns the passes must not change in onnxruntime's eyes, beyond the fixtures above: other ranks,
# ceil_mode, strides larger than the kernel, several windows reading only padding taps.
EQUIVALENT = [
    ("MaxPool", [2, 3, 11], dict(kernel_shape=[3], dilations=[3], strides=[2], pads=[2, 1], ceil_mode=1)),
    ("MaxPool", [1, 2, 5, 6, 7], dict(kernel_shape=[2, 3, 2], dilations=[2, 1, 3], pads=[1, 2, 0, 1, 1, 1])),
    ("MaxPool", [1, 2, 8, 9], dict(kernel_shape=[4, 2], dilations=[3, 2], strides=[3, 2], pads=[3, 1, 3, 0])),
    ("LpPool", [1, 2, 9], dict(kernel_shape=[4], strides=[2], pads=[3, 1], p=1)),
    ("LpPool", [1, 2, 6, 7, 5], dict(kernel_shape=[3, 2, 2], strides=[2, 1, 2], pads=[1, 0, 1, 1, 1, 0], p=3)),
    ("Elu", [2, 5], dict(alpha=0.5)),
]


@pytest.mark.parametrize(("op", "shape", "attrs"), EQUIVALENT, ids=[f"{op}-{i}" for i, (op, *_) in
                                                                    enumerate(EQUIVALENT)])
def test_rewrites_keep_onnxruntime_results(op, shape, attrs):
    model = _node(op, shape, **attrs)
    feed = _feed(model)
    rewritten = copy.deepcopy(model)
    assert apply_rewrites(rewritten)
    onnx.checker.check_model(rewritten, full_check=True)
    assert _rel_l2(_onnxruntime(rewritten, feed), _onnxruntime(model, feed)) < SAME_GRAPH


def _untouched_graph() -> onnx.ModelProto:
    """Everything onnx2tf lowers right, plus patterns the passes cannot size (dynamic spatial dims)."""
    w = numpy_helper.from_array(np.ones([4, 4, 3, 3], np.float32), "w")
    scale = numpy_helper.from_array(np.full([1, 4, 1, 1], 2, np.float32), "scale")  # C unlike H and W
    bias = numpy_helper.from_array(np.ones([4, 1, 1], np.float32), "bias")
    nodes = [
        helper.make_node("Mul", ["x", "scale"], ["x1"]),
        helper.make_node("Sub", ["x1", "bias"], ["x2"]),
        helper.make_node("AveragePool", ["x2"], ["a"], kernel_shape=[2, 2], pads=[0, 0, 1, 1]),
        helper.make_node("AveragePool", ["a"], ["b"], kernel_shape=[3, 3], strides=[2, 2],
                         auto_pad="SAME_UPPER"),
        helper.make_node("MaxPool", ["b"], ["c"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                         ceil_mode=1),
        helper.make_node("MaxPool", ["c"], ["d"], kernel_shape=[3, 3], auto_pad="SAME_LOWER"),
        helper.make_node("Conv", ["d", "w"], ["e"], auto_pad="SAME_UPPER", strides=[2, 2]),
        helper.make_node("LpPool", ["e"], ["f"], kernel_shape=[2, 2], p=2),
        helper.make_node("Resize", ["f", "", "scales"], ["g"], mode="nearest"),  # spatial dims unknown below
        helper.make_node("MaxPool", ["g"], ["h"], kernel_shape=[2, 2], dilations=[2, 2]),
        helper.make_node("MaxPool", ["h"], ["y"], kernel_shape=[2, 2], auto_pad="SAME_LOWER"),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 20, 20]),
              helper.make_tensor_value_info("scales", TensorProto.FLOAT, [4])]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "untouched", inputs, [y], [w, scale, bias])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)


def test_graph_without_the_patterns_is_left_alone():
    model = _untouched_graph()
    before = model.SerializeToString()
    assert apply_rewrites(model) == []
    assert model.SerializeToString() == before


def test_every_pipeline_pass_has_a_case():
    assert set(PIPELINE) == {c.rewrite for c in CASES}


def test_pass_names_are_unique_and_known():
    with pytest.raises(ValueError, match="already registered"):
        rewrites.rewrite(PIPELINE[0])(lambda model: 0)
    with pytest.raises(ValueError, match="unknown rewrite"):
        apply_rewrites(_untouched_graph(), ["no-such-pass"])


# Matrix products einsum-as-matmul rewrites (a dynamic dim, an operand of rank 3 or more), in every
# arrangement of batch, row, column and summed indices it handles; w is a constant, or x again.
EINSUM_EQUIVALENT = [
    ("bij,bjk->bik", [2, "T", 7], [2, 7, 3]),
    ("bij,bjk->bki", [2, "T", 7], [2, 7, 3]),
    ("bji,bjk->bik", [2, 7, "T"], [2, 7, 3]),
    ("bij,bkj->bik", [2, "T", 7], None),
    ("bij,bj->bi", [2, "T", 7], [2, 7]),
    ("ij,bjk->bik", ["T", 7], [2, 7, 3]),
    ("bhqd,bhkd->bhqk", [1, 2, "T", 8], [1, 2, 6, 8]),
    ("bqhd,bkhd->bhqk", [1, "T", 2, 8], [1, 6, 2, 8]),
    ("bhqk,bkhd->bqhd", [1, 2, "T", 6], [1, 6, 2, 8]),
    ("abij,bjk->abik", [3, 2, "T", 7], [2, 7, 4]),
    ("aij,bjk->baki", [3, "T", 7], [2, 7, 4]),
    ("BIJ,BKJ->BKI", ["N", 5, 7], None),
]


@pytest.mark.parametrize(("equation", "shape", "w_shape"), EINSUM_EQUIVALENT, ids=[e for e, *_ in EINSUM_EQUIVALENT])
def test_einsum_as_matmul_keeps_onnxruntime_results(equation, shape, w_shape):
    model = _einsum(equation, shape=shape, w_shape=w_shape)
    rewritten = copy.deepcopy(model)
    assert apply_rewrites(rewritten) == ["einsum-as-matmul x1"]
    onnx.checker.check_model(rewritten, full_check=True)
    assert "Einsum" not in {n.op_type for n in rewritten.graph.node}
    assert tensor_types(rewritten)["y"] == tensor_types(model)["y"]  # same name, type and shape
    for size in (DYNAMIC, 9):
        x = np.random.default_rng(0).standard_normal([size if isinstance(d, str) else d for d in shape])
        feed = {"x": x.astype(np.float32)}
        assert _rel_l2(_onnxruntime(rewritten, feed), _onnxruntime(model, feed)) < SAME_GRAPH


# Einsums onnx2tf lowers right as they are, which the pass leaves alone: static shapes (the
# equations torch exports most), and 2-D operands only, dynamic or not.
EINSUM_RIGHT_AS_IS = [
    ("bij,bjk->bik", [2, 5, 7], [2, 7, 3]),
    ("bhqd,bhkd->bhqk", [1, 2, 5, 8], [1, 2, 6, 8]),
    ("bhqk,bhkd->bhqd", [1, 2, 5, 6], [1, 2, 6, 8]),
    ("ij,jk->ik", [5, 7], [7, 3]),
    ("bij,jk->bik", [2, 5, 7], [7, 3]),
    ("bi,bi->b", [3, 7], [3, 7]),
    ("ij,jk->ik", ["T", 7], [7, 3]),
    pytest.param("bi,bi->b", ["T", 7], None, marks=pytest.mark.xfail(
        strict=True, reason="ai-edge-litert's XNNPACK cannot reshape the file at T=5 (onnx2tf 2.6.9)")),
]


@pytest.mark.parametrize(("equation", "shape", "w_shape"), EINSUM_RIGHT_AS_IS,
                         ids=[f"{e}-{'x'.join(map(str, s))}" for e, s, _ in
                              (getattr(c, "values", c) for c in EINSUM_RIGHT_AS_IS)])
def test_einsums_onnx2tf_lowers_right_are_left_alone(equation, shape, w_shape, tmp_path):
    """If the TFLite check fails, onnx2tf broke the pattern: widen the pass to cover it."""
    model = _einsum(equation, shape=shape, w_shape=w_shape)
    before = model.SerializeToString()
    assert apply_rewrites(model) == []
    assert model.SerializeToString() == before
    feed = _feed(model)
    expected = _onnxruntime(model, feed)
    assert _rel_l2(_tflite(model, feed, tmp_path, expected), expected) < TFLITE


@pytest.mark.parametrize("equation", [
    "bi,bj->bij",  # no summed index: an outer product
    "bij,bij->bij",  # elementwise
    "bijk,bjkl->bil",  # two summed indices
    "bij,bjk->bi",  # k summed within one operand
    "bii,bij->bj",  # a diagonal
    "bij,bjk",  # implicit output
    "...ij,...jk->...ik",  # ellipsis
    "bij->bji",  # one operand
    "bij,bjk,bkl->bil",  # three
])
def test_einsums_that_are_not_one_matmul_are_left_alone(equation):
    assert rewrites._matmul_form(equation) is None


@pytest.mark.slow
def test_torch_einsum_with_a_dynamic_axis_converts(tmp_path):
    """The pass in the lane: a dynamic axis sends onnx2tf down its broken Einsum path (without the
    pass: "onnx2tf turned output output of shape [2, 5, 3] into [2, 7, 7]")."""
    source = write_module(tmp_path / "einsum_model.py", """
        import torch
        from torch import nn

        class BatchedProduct(nn.Module):
            def __init__(self):
                super().__init__()
                self.w = nn.Parameter(torch.randn(2, 7, 3))

            def forward(self, x):
                return torch.einsum("bij,bjk->bik", x, self.w)

        def make():
            torch.manual_seed(0)
            return BatchedProduct().eval(), torch.randn(2, 5, 7)
        """)
    out = tmp_path / "out"
    r = bridge("convert", f"{source}:make", "--target", "tflite", "--dynamic", "x:1", "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    a = artifact(report(out), "tflite", "fp32")
    assert a["parity"]["passed"] and a["parity"]["sizes"] == {"x:1": [5, 10]}
    assert a["parity"]["outputs"]["output"]["rel_l2"] <= 1e-4
    assert "ONNX rewritten before onnx2tf: einsum-as-matmul x1" in a["warnings"]
