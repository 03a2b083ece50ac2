"""The hub passes, each checked against the source framework.

Every case is a PyTorch module whose opset-17 export onnxruntime (1.23) computes wrongly. One test
shows it still does, so it fails the day onnxruntime gets it right and the pass can go; the next
shows the rewritten graph matching PyTorch in onnxruntime and in onnx2tf's TFLite (2.x, flatbuffer_direct).
"""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from bridge.converters.onnx import passes
from bridge.converters.onnx.passes import PIPELINE, apply_passes

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
helper, TensorProto = onnx.helper, onnx.TensorProto
nn = torch.nn

BROKEN = 1e-3  # relative L2 error onnxruntime shows without the pass
SAME = 1e-6  # onnxruntime on the rewritten graph vs PyTorch
TFLITE = 1e-5  # TFLite vs PyTorch


@dataclass(frozen=True)
class Case:
    name: str
    hub_pass: str
    module: Callable[[], nn.Module]
    shape: list[int]


CASES = [  # torch's AvgPool*d count_include_pad defaults to True
    Case("avgpool-3-2-pad-1-ceil", "avgpool-ceil-overhang", lambda: nn.AvgPool2d(3, 2, padding=1, ceil_mode=True),
         [1, 4, 10, 7]),
    Case("avgpool-2-2-ceil", "avgpool-ceil-overhang", lambda: nn.AvgPool2d(2, 2, ceil_mode=True), [1, 4, 9, 7]),
    # batch 2 with C == H == W: the shapes where onnx2tf broadcasts or pads the simpler forms wrongly
    Case("avgpool-ceil-cube-batch-2", "avgpool-ceil-overhang",
         lambda: nn.AvgPool2d(3, 2, padding=1, ceil_mode=True), [2, 16, 16, 16]),
]


def _export(module: nn.Module, shape: list[int]) -> onnx.ModelProto:
    """The export the torch source makes: TorchScript-based, opset 17."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(module, (torch.zeros(shape),), buffer, opset_version=17, dynamo=False,
                          input_names=["x"], output_names=["y"])
    return onnx.load_from_string(buffer.getvalue())


def _feed(shape: list[int]) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def _torch(module: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def _onnxruntime(model, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["y"], {"x": x})[0]


def _tflite(model, x: np.ndarray, workdir) -> np.ndarray:
    """onnx2tf as the TFLite lane runs it (in memory, flatbuffer_direct, no onnxsim), the input
    channel-last; the output in the layout (channel-last or as is) closest to onnxruntime's."""
    pytest.importorskip("onnx2tf")
    pytest.importorskip("ai_edge_litert.interpreter")
    from bridge.converters.tflite.direct import convert_float
    from bridge.converters.tflite.layout import InputPlan
    from bridge.validators.runners.tflite import TFLiteRunner

    fp32 = convert_float(copy.deepcopy(model), Path(workdir) / "onnx2tf", InputPlan((), (), {}, {}), {})
    runner = TFLiteRunner()
    runner.load(str(fp32.path))
    y = runner.infer({"x": np.ascontiguousarray(x.transpose(0, 2, 3, 1))})["y"]
    reference = _onnxruntime(model, x)
    candidates = [c for c in (y.transpose(0, 3, 1, 2), y) if c.shape == reference.shape]
    return min(candidates, key=lambda c: _rel_l2(c, reference)) if candidates else y


def _rel_l2(actual: np.ndarray, reference: np.ndarray) -> float:
    assert actual.shape == reference.shape, f"shape {actual.shape} != {reference.shape}"
    diff = np.linalg.norm(actual.astype(np.float64) - reference)
    return float(diff / max(np.linalg.norm(reference.astype(np.float64)), 1e-30))


# --- tests ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_onnxruntime_still_gets_it_wrong(case: Case):
    """If this fails, onnxruntime computes the pattern right now: drop the case, and the pass with
    its last case."""
    module, x = case.module(), _feed(case.shape)
    assert _rel_l2(_onnxruntime(_export(module, case.shape), x), _torch(module, x)) > BROKEN


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_pass_matches_torch_in_onnxruntime_and_tflite(case: Case, tmp_path):
    module, x = case.module(), _feed(case.shape)
    model = _export(module, case.shape)
    assert apply_passes(model) == [f"{case.hub_pass} x1"]
    onnx.checker.check_model(model, full_check=True)
    expected = _torch(module, x)
    assert _rel_l2(_onnxruntime(model, x), expected) < SAME
    assert _rel_l2(_tflite(model, x, tmp_path), expected) < TFLITE


# More windows the pass must get right in onnxruntime: other ranks, uneven kernels and strides,
# overhang on one axis only, padding plus overhang at the kernel-size limit.
EQUIVALENT = [
    (lambda: nn.AvgPool1d(3, 2, padding=1, ceil_mode=True), [2, 3, 10]),
    (lambda: nn.AvgPool3d(3, 2, padding=1, ceil_mode=True), [1, 2, 6, 7, 5]),
    (lambda: nn.AvgPool2d((3, 2), (2, 3), padding=(1, 0), ceil_mode=True), [1, 3, 10, 11]),
    (lambda: nn.AvgPool2d(5, 3, padding=2, ceil_mode=True), [1, 3, 12, 13]),
    (lambda: nn.AvgPool2d((4, 2), (4, 2), padding=(2, 1), ceil_mode=True), [1, 2, 11, 8]),
]


@pytest.mark.parametrize(("module", "shape"), EQUIVALENT, ids=[str(i) for i in range(len(EQUIVALENT))])
def test_pass_matches_torch_in_onnxruntime(module, shape):
    module, x = module(), _feed(shape)
    model = _export(module, shape)
    assert apply_passes(model)
    onnx.checker.check_model(model, full_check=True)
    assert _rel_l2(_onnxruntime(model, x), _torch(module, x)) < SAME


def _untouched_graph() -> onnx.ModelProto:
    """Pools onnxruntime computes right, plus the pattern where the pass cannot size it."""
    ceil_include_pad = dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1, count_include_pad=1)
    nodes = [
        helper.make_node("AveragePool", ["x"], ["a"], pads=[1, 1, 1, 1], **ceil_include_pad),  # 9x9: no overhang
        helper.make_node("AveragePool", ["a"], ["b"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
        helper.make_node("AveragePool", ["b"], ["c"], kernel_shape=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1),
        helper.make_node("MaxPool", ["c"], ["d"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
        helper.make_node("Resize", ["d", "", "scales"], ["e"], mode="nearest"),  # spatial dims unknown below
        helper.make_node("AveragePool", ["e"], ["y"], **ceil_include_pad),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 9, 9]),
              helper.make_tensor_value_info("scales", TensorProto.FLOAT, [4])]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "untouched", inputs, [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_graph_without_the_pattern_is_left_alone():
    model = _untouched_graph()
    before = model.SerializeToString()
    assert apply_passes(model) == []
    assert model.SerializeToString() == before


def test_every_pipeline_pass_has_a_case():
    assert set(PIPELINE) == {c.hub_pass for c in CASES} | CHECKER_PASSES


# --- passes for onnx's checker, not onnxruntime ------------------------------------------------------

CHECKER_PASSES = {"mvn-default-axes"}  # each with the two tests below


def _mvn(**attrs) -> onnx.ModelProto:
    """onnx's test_mvn on x [2, 3, 4, 5]; with `axes`, a second MVN over those too."""
    nodes = [helper.make_node("MeanVarianceNormalization", ["x"], ["y"], name="mvn")]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4, 5])]
    if attrs:
        nodes.append(helper.make_node("MeanVarianceNormalization", ["x"], ["z"], name="mvn_axes", **attrs))
        outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 3, 4, 5]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4, 5])],
                              outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def test_onnx_checker_still_rejects_mvn_without_axes():
    """If this fails, onnx's checker infers MeanVarianceNormalization's default axes now: drop the
    mvn-default-axes pass."""
    with pytest.raises(onnx.shape_inference.InferenceError, match="Constant"):
        onnx.checker.check_model(_mvn(), full_check=True)


def test_mvn_default_axes_passes_the_checker_with_the_same_numbers():
    model, x = _mvn(axes=[2, 3]), _feed([2, 3, 4, 5])
    before = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert apply_passes(model) == ["mvn-default-axes x1"]  # the node with its own axes is left alone
    assert [list(a.ints) for n in model.graph.node for a in n.attribute] == [[0, 2, 3], [2, 3]]
    onnx.checker.check_model(model, full_check=True)
    after = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    mean, std = x.mean(axis=(0, 2, 3), keepdims=True), x.std(axis=(0, 2, 3), keepdims=True)
    assert _rel_l2(after[0], (x - mean) / std) < SAME


def test_pass_names_are_unique_and_known():
    with pytest.raises(ValueError, match="already registered"):
        passes.hub_pass(PIPELINE[0])(lambda model: 0)
    with pytest.raises(ValueError, match="unknown hub pass"):
        apply_passes(_untouched_graph(), ["no-such-pass"])
