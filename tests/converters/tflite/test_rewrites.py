"""The TFLite lane's ONNX rewrites, each checked against onnx2tf itself.

Every case is a small graph onnx2tf (1.29.24) lowers wrongly. One test shows it still does, so it
fails the day onnx2tf fixes the pattern and the pass can go; the next shows the rewritten graph
keeps onnxruntime's result and converts to a TFLite model that matches it.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

from bridge.converters.tflite import rewrites
from bridge.converters.tflite.rewrites import PIPELINE, apply_rewrites

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
onnx2tf = pytest.importorskip("onnx2tf")
tf = pytest.importorskip("tensorflow")
litert = pytest.importorskip("ai_edge_litert.interpreter")
helper, numpy_helper, TensorProto = onnx.helper, onnx.numpy_helper, onnx.TensorProto

OPSET = 17  # the hub's opset
BROKEN = 1e-3  # relative L2 error onnx2tf's TFLite shows without the rewrite
SAME_GRAPH = 1e-6  # onnxruntime, rewritten vs original graph
TFLITE = 1e-5  # TFLite vs onnxruntime after the rewrite


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


def _with_constant(op: str, shape, const_shape, first: bool) -> onnx.ModelProto:
    """Relu, then `op` with a constant operand (first or second), as in a network's body."""
    const = np.random.default_rng(2).uniform(0.5, 1.5, const_shape).astype(np.float32)
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node(op, ["c", "r"] if first else ["r", "c"], ["y"], name=op.lower())]
    return _graph(nodes, shape, [numpy_helper.from_array(const, "c")])


def _conv(shape, **attrs) -> onnx.ModelProto:
    weight = np.random.default_rng(1).standard_normal([5, shape[1], 3, 3]).astype(np.float32)
    return _node("Conv", shape, "w", initializers=[numpy_helper.from_array(weight, "w")], **attrs)


@dataclass(frozen=True)
class Case:
    name: str
    rewrite: str
    build: Callable[[], onnx.ModelProto]
    fails_with: str | None = None  # onnx2tf's error, where it fails loudly instead of silently


CASES = [
    Case("avgpool-same-upper-include-pad", "explicit-auto-pad", lambda: _node(
        "AveragePool", [1, 4, 10, 7], kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER",
        count_include_pad=1)),
    Case("maxpool-same-lower", "explicit-auto-pad", lambda: _node(
        "MaxPool", [1, 4, 10, 7], kernel_shape=[2, 2], auto_pad="SAME_LOWER")),
    Case("conv-same-lower", "explicit-auto-pad", lambda: _conv(
        [1, 4, 10, 7], strides=[2, 2], auto_pad="SAME_LOWER"), fails_with="SAME_LOWER"),
    Case("lppool-same-pads", "lppool-explicit-pad", lambda: _node(
        "LpPool", [1, 4, 10, 7], kernel_shape=[3, 3], pads=[1, 1, 1, 1], p=2)),
    Case("maxpool-dilations", "maxpool-dilations", lambda: _node(
        "MaxPool", [1, 3, 9, 9], kernel_shape=[3, 3], dilations=[2, 2], pads=[1, 1, 1, 1], strides=[2, 1],
        ceil_mode=1), fails_with="Dilation2D"),
    # constants onnx2tf broadcasts along the wrong axis where C equals H or W, or crashes on
    Case("mul-channel-constant-cube", "expand-broadcast-constants", lambda: _with_constant(
        "Mul", [1, 16, 16, 16], [1, 16, 1, 1], first=False)),
    Case("sub-channel-constant-first-c-equals-w", "expand-broadcast-constants", lambda: _with_constant(
        "Sub", [1, 16, 12, 16], [1, 16, 1, 1], first=True)),
    Case("mul-spatial-constant", "expand-broadcast-constants", lambda: _with_constant(
        "Mul", [1, 16, 12, 14], [1, 1, 12, 14], first=False), fails_with="Dimensions must be equal"),
    Case("sub-rank-3-channel-constant-first", "expand-broadcast-constants", lambda: _with_constant(
        "Sub", [1, 16, 12, 14], [16, 1, 1], first=True), fails_with="axes don't match"),
    Case("mul-full-constant-batch-2", "expand-broadcast-constants", lambda: _with_constant(
        "Mul", [2, 4, 10, 7], [1, 4, 10, 7], first=False), fails_with="Dimensions must be equal"),
    Case("mul-channel-constant-5d-cube", "expand-broadcast-constants", lambda: _with_constant(
        "Mul", [1, 8, 8, 8, 8], [1, 8, 1, 1, 1], first=False)),
]


# --- runners ----------------------------------------------------------------------------------------


def _feed(model) -> dict[str, np.ndarray]:
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    return {"x": np.random.default_rng(0).standard_normal(shape).astype(np.float32)}


def _onnxruntime(model, feed) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["y"], feed)[0]


def _tflite(model, feed, workdir) -> np.ndarray:
    """onnx2tf as the lane runs it (in memory, no onnxsim, strict), then TFLite from a signature
    named after the ONNX graph; channel-first tensors go channel-last and back."""
    os.makedirs(workdir, exist_ok=True)
    np.save(os.path.join(workdir, "calibration_image_sample_data_20x128x128x3_float32.npy"),
            np.random.default_rng(0).random((20, 128, 128, 3), dtype=np.float32))
    cwd = os.getcwd()
    try:
        os.chdir(workdir)  # onnx2tf reads its sample images from here instead of downloading them
        with contextlib.redirect_stdout(io.StringIO()):
            keras_model = onnx2tf.convert(onnx_graph=copy.deepcopy(model), output_folder_path="saved_model",
                                          disable_model_save=True, output_signaturedefs=True,
                                          not_use_onnxsim=True, non_verbose=True, verbosity="error")
    finally:
        os.chdir(cwd)
    x = _channel_last(feed["x"])
    spec = tf.TensorSpec(x.shape, tf.float32, name="x")
    function = tf.function(lambda t: {"y": keras_model(t)}, input_signature=[spec]).get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], keras_model)
    runner = litert.Interpreter(model_content=converter.convert()).get_signature_runner()
    y = runner(x=x)["y"]
    return y.transpose(0, y.ndim - 1, *range(1, y.ndim - 1))


def _channel_last(x: np.ndarray) -> np.ndarray:
    return x.transpose(0, *range(2, x.ndim), 1)


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
    if case.fails_with:
        with pytest.raises(Exception, match=case.fails_with):
            _tflite(model, feed, tmp_path)
        return
    expected, got = _onnxruntime(model, feed), _tflite(model, feed, tmp_path)
    assert got.shape != expected.shape or _rel_l2(got, expected) > BROKEN


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_rewrite_matches_onnxruntime_in_tflite(case: Case, tmp_path):
    model = case.build()
    feed = _feed(model)
    rewritten = copy.deepcopy(model)
    assert apply_rewrites(rewritten) == [f"{case.rewrite} x1"]
    onnx.checker.check_model(rewritten, full_check=True)
    expected = _onnxruntime(model, feed)
    assert _rel_l2(_onnxruntime(rewritten, feed), expected) < SAME_GRAPH
    assert _rel_l2(_tflite(rewritten, feed, tmp_path), expected) < TFLITE


# Patterns the passes must not change in onnxruntime's eyes, beyond the fixtures above: other ranks,
# ceil_mode, strides larger than the kernel, several windows reading only padding taps.
EQUIVALENT = [
    ("MaxPool", [2, 3, 11], dict(kernel_shape=[3], dilations=[3], strides=[2], pads=[2, 1], ceil_mode=1)),
    ("MaxPool", [1, 2, 5, 6, 7], dict(kernel_shape=[2, 3, 2], dilations=[2, 1, 3], pads=[1, 2, 0, 1, 1, 1])),
    ("MaxPool", [1, 2, 8, 9], dict(kernel_shape=[4, 2], dilations=[3, 2], strides=[3, 2], pads=[3, 1, 3, 0])),
    ("AveragePool", [1, 2, 5, 6, 7], dict(kernel_shape=[2, 3, 4], strides=[2, 1, 2], auto_pad="SAME_LOWER")),
    ("AveragePool", [2, 3, 9], dict(kernel_shape=[4], strides=[3], auto_pad="SAME_UPPER",
                                    count_include_pad=1)),
    ("LpPool", [1, 2, 6, 7, 5], dict(kernel_shape=[3, 2, 2], strides=[2, 1, 2], auto_pad="SAME_UPPER", p=3)),
    ("LpPool", [1, 2, 9], dict(kernel_shape=[4], strides=[2], pads=[3, 1], p=1)),
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


def _shared_constant_graph(batch) -> onnx.ModelProto:
    """One per-channel constant, C == H, read by Div (first operand) and Add (second)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 6, 6, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    c = numpy_helper.from_array(np.random.default_rng(2).uniform(0.5, 1.5, [6, 1, 1]).astype(np.float32), "c")
    nodes = [helper.make_node("Div", ["c", "x"], ["a"]), helper.make_node("Add", ["a", "c"], ["y"])]
    graph = helper.make_graph(nodes, "shared", [x], [y], [c])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


@pytest.mark.parametrize("batch", [1, 2, "N"])
def test_expanded_constants_keep_onnxruntime_results(batch):
    model = _shared_constant_graph(batch)
    x = np.random.default_rng(0).uniform(0.5, 1.5, [2 if batch == "N" else batch, 6, 6, 5]).astype(np.float32)
    rewritten = copy.deepcopy(model)
    assert apply_rewrites(rewritten) == ["expand-broadcast-constants x2"]
    onnx.checker.check_model(rewritten, full_check=True)
    # one copy for both nodes, and the original gone
    assert [list(t.dims) for t in rewritten.graph.initializer] == [[1 if batch == "N" else batch, 6, 6, 5]]
    assert _rel_l2(_onnxruntime(rewritten, {"x": x}), _onnxruntime(model, {"x": x})) < SAME_GRAPH


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
