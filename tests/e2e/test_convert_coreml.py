"""The Core ML lane end to end: every mode from one call, next to the TFLite artifacts."""

from __future__ import annotations

import json

import pytest

from bridge.lanes import lanes
from tests.conftest import SAMPLES, artifact, bridge, report

pytestmark = pytest.mark.slow

COREML_MODES = ("fp32", "fp16", "int8-weights", "int8", "palettize-8", "palettize-6", "palettize-4", "int4-weights")


def test_torch_cnn_every_coreml_mode_next_to_tflite(tmp_path):
    ct = pytest.importorskip("coremltools")
    out = tmp_path / "out"
    r = bridge("convert", f"{SAMPLES}/shapes_cnn.py:load", "--target", "tflite", "--target", "coreml",
               "--quantize", f"coreml={','.join(COREML_MODES)}", "--calibration", SAMPLES / "calibration",
               "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = report(out)
    assert artifact(rep, "tflite", "fp32")["parity"]["passed"]
    for mode in COREML_MODES:
        a = artifact(rep, "coreml", mode)
        assert a["error"] is None, a["error"]
        path = out / a["path"]
        assert path.is_dir() and (path / "Manifest.json").is_file()
        ct.models.MLModel(str(path), skip_model_load=True)
        # readable by everyone under the test's umask, like the TFLite file beside it (coremltools
        # alone leaves the spec 0600 and its folders 0700)
        modes = {f.relative_to(path).as_posix(): f.stat().st_mode & 0o777 for f in [path, *path.rglob("*")]}
        assert all(m & 0o444 == 0o444 for m in modes.values()), modes
        assert a["parity"]["status"] == "passed", a["parity"]["reason"]
        assert a["parity"]["runtime"] == "coreml-reference"
        assert set(a["parity"]["stages"]) == {"onnx->target"}
    targets = {m: artifact(rep, "coreml", m)["deployment_target"] for m in COREML_MODES}
    assert targets["fp16"] == "iOS16" and targets["int8"] == "iOS17" and targets["int4-weights"] == "iOS18"
    per_param = {m: artifact(rep, "coreml", m)["compressed_weights"]["bytes_per_param"] for m in COREML_MODES}
    assert per_param["int8-weights"] <= 1.05
    assert per_param["palettize-4"] <= 0.55
    assert per_param["palettize-6"] < per_param["palettize-8"] <= 1.05
    assert per_param["int4-weights"] <= 0.55
    sizes = {m: artifact(rep, "coreml", m)["bytes"] for m in COREML_MODES}
    assert sizes["palettize-4"] < sizes["int8-weights"] < sizes["fp16"] < sizes["fp32"]
    # Every mode round-trips: CLI text -> package -> the mode `validate` reads back from its ops.
    # mixed modes (a base mode with named layers kept in float) have their own tests: test_mixed_precision.py
    assert set(COREML_MODES) == {m.name for m in lanes()["coreml"].modes if not m.mixed}, \
        "a new mode must join this test"
    packages = [out / artifact(rep, "coreml", m)["path"] for m in COREML_MODES]
    r = bridge("validate", f"{SAMPLES}/shapes_cnn.py:load", *packages, "--report", tmp_path / "v.json")
    checked = json.loads((tmp_path / "v.json").read_text())["artifacts"]
    assert [a["quantization"] for a in checked] == list(COREML_MODES), r.stderr[-2000:]


def test_unsupported_ops_named_all_at_once_and_tflite_still_converts(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Det", ["x"], ["a"], name="det1"), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("LpNormalization", ["b"], ["c"], name="lpnorm1"),
             helper.make_node("Neg", ["x"], ["n"]), helper.make_node("Det", ["n"], ["d"], name="det2"),
             helper.make_node("Add", ["c", "d"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    path = tmp_path / "odd.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    r = bridge("convert", path, "--target", "onnx", "--target", "coreml", "--out", tmp_path / "out")
    assert r.returncode == 3, r.stderr
    a = artifact(report(tmp_path / "out"), "coreml", "fp16")
    assert a["error"]["stage"] == "coreml-preflight"
    message = a["error"]["message"]
    assert "Det (det1, det2; no Core ML converter)" in message
    assert "LpNormalization (lpnorm1; no Core ML converter)" in message
    assert artifact(report(tmp_path / "out"), "onnx", "fp32")["parity"]["passed"]


def test_explicit_target_too_old_for_a_mode_is_usage_error(tmp_path):
    r = bridge("convert", f"{SAMPLES}/shapes_cnn.py:load", "--target", "coreml", "--quantize", "coreml=int4-weights",
               "--coreml-target", "iOS16", "--out", tmp_path / "out")
    assert r.returncode == 2 and "int4-weights needs --coreml-target iOS18" in r.stderr
    assert not (tmp_path / "out").exists()


TRANSFORMER = """
    import torch
    from torch import nn

    class TinyTransformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(100, 32)
            self.pos = nn.Parameter(torch.randn(1, 16, 32) * 0.02)
            layer = nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, batch_first=True, dropout=0.0)
            self.encoder = nn.TransformerEncoder(layer, 2)
            self.head = nn.Linear(32, 5)

        def forward(self, ids):
            return self.head(self.encoder(self.emb(ids) + self.pos).mean(1))

    def make():
        torch.manual_seed(0)
        return TinyTransformer().eval(), torch.randint(0, 100, (1, 16))
"""


def test_transformer_encoder_reaches_core_ml_through_onnx(tmp_path):
    """coremltools' own torch frontend fails on nn.TransformerEncoder; the ONNX route does not."""
    from tests.conftest import write_module

    src = write_module(tmp_path / "tiny_transformer.py", TRANSFORMER)
    out = tmp_path / "out"
    r = bridge("convert", f"{src}:make", "--target", "coreml",
               "--quantize", "coreml=fp32,fp16,int8-weights,palettize-4", "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = report(out)
    snr = {a["quantization"]: a["parity"]["outputs"]["output"]["snr_db"] for a in rep["artifacts"]}
    assert all(a["parity"]["runtime"] == "coreml-reference" for a in rep["artifacts"])
    assert snr["fp32"] > 100 and snr["fp16"] > 50 and snr["int8-weights"] > 40 and snr["palettize-4"] > 18
    ids = artifact(rep, "coreml", "fp16")["io"]["inputs"][0]
    assert ids["dtype"] == "int32" and any("int32" in w for w in artifact(rep, "coreml", "fp16")["warnings"])


def test_keras_and_old_onnx_to_core_ml(tmp_path):
    r = bridge("convert", SAMPLES / "shapes_keras.keras", "--target", "tflite", "--target", "coreml",
               "--quantize", f"coreml={','.join(COREML_MODES)}", "--calibration", SAMPLES / "calibration",
               "--out", tmp_path / "keras")
    assert r.returncode == 0, r.stderr[-3000:]
    rep = report(tmp_path / "keras")
    assert all(a["parity"]["passed"] for a in rep["artifacts"])
    # Keras is NHWC: the Core ML input keeps the source layout.
    assert artifact(rep, "coreml", "fp16")["io"]["inputs"][0]["shape"] == [1, 64, 64, 3]


def test_a_core_ml_conversion_leaves_no_temporary_package(tmp_path):
    """coremltools keeps every model it makes in a temporary .mlpackage that only an exit hook
    deletes; stage children leave without exit hooks, and each conversion left one behind (the
    size of its weights) until the disk filled."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    r = bridge("convert", f"{SAMPLES}/shapes_cnn.py:load", "--target", "coreml", "--quantize",
               "coreml=fp16,palettize-4", "--out", tmp_path / "out", "--no-cache", env={"TMPDIR": str(tmp)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(list((tmp_path / "out").glob("*.mlpackage"))) == 2
    assert list(tmp.iterdir()) == []
