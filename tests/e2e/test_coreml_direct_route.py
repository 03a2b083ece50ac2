"""`--coreml-route direct`: coremltools' own frontends, next to our ONNX route, for comparison."""

from __future__ import annotations

import pytest

from tests.conftest import SAMPLES, artifact, bridge, report

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("source, framework, output", [
    (f"{SAMPLES}/shapes_cnn.py:load", "torch", "output"),
    (str(SAMPLES / "shapes_keras.keras"), "keras", "logits"),
])
def test_direct_route_converts_and_is_judged_like_the_onnx_route(tmp_path, source, framework, output):
    pytest.importorskip("coremltools")
    r = bridge("convert", source, "--target", "coreml", "--quantize", "coreml=fp32,palettize-4",
               "--coreml-route", "direct", "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr[-3000:]
    rep = report(tmp_path / "out")
    fp32 = artifact(rep, "coreml", "fp32")
    frontend = "pytorch" if framework == "torch" else "tensorflow"
    assert fp32["route"] == [framework, f"coremltools({frontend})"]
    assert fp32["parity"]["runtime"] == "coreml-reference"
    assert fp32["parity"]["outputs"][output]["rel_l2"] <= 1e-4
    assert "stages" not in fp32["parity"], "the file never passed through the hub"
    pal = artifact(rep, "coreml", "palettize-4")
    assert pal["compressed_weights"]["bytes_per_param"] <= 0.55 and pal["parity"]["passed"]


@pytest.mark.parametrize("args, message", [
    (["{onnx}", "--target", "coreml"], "coremltools has no frontend for a onnx source"),
    (["{cnn}", "--target", "tflite"], "--coreml-route direct needs --target coreml"),
    (["{cnn}", "--target", "coreml", "--quantize", "coreml=fp16,int8"], "coreml int8 quantizes activations"),
    (["{cnn}", "--target", "coreml", "--coreml-image-input"], "--coreml-image-input is built by the ONNX route"),
])
def test_direct_route_usage_errors(tmp_path, args, message):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "relu.onnx")
    subst = {"{onnx}": tmp_path / "relu.onnx", "{cnn}": f"{SAMPLES}/shapes_cnn.py:load"}
    r = bridge("convert", *[subst.get(a, a) for a in args], "--coreml-route", "direct", "--out", tmp_path / "out")
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], r.stderr
