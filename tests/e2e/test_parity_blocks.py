"""Parity must block: artifacts that compute something else fail with exit 1."""

from __future__ import annotations

import pytest

from tests.conftest import artifact, bridge, report, write_module

pytestmark = pytest.mark.slow

MODEL = """
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.head = nn.Linear(8, 5)

        def forward(self, image):
            h = torch.relu(self.conv(image)).mean(dim=(2, 3))
            return self.head(h) * SCALE

    def make():
        torch.manual_seed(0)
        net = Net().eval()
        with torch.no_grad():
            for p in net.parameters():
                p.add_(NOISE * torch.randn_like(p))
        return net, torch.randn(1, 3, 12, 12)
"""


def _model(path, scale=1.0, noise=0.0):
    # The seed makes the base weights identical; NOISE perturbs them after.
    return write_module(path, MODEL.replace("SCALE", repr(scale)).replace("NOISE", repr(noise)))


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """ONNX and TFLite files of a perturbed and of a scaled model, and the true source."""
    root = tmp_path_factory.mktemp("parity")
    source = _model(root / "source.py")
    made = {}
    for name, kwargs in {"perturbed": {"noise": 0.05}, "scaled": {"scale": 1.3}}.items():
        out = root / name
        r = bridge("convert", f"{_model(root / f'{name}.py', **kwargs)}:make", "--target", "onnx",
                   "--target", "tflite", "--target", "coreml", "--quantize", "tflite=fp32,fp16", "--out", out)
        assert r.returncode == 0, r.stderr[-2000:]
        made[name] = out
    return source, made


@pytest.mark.parametrize("kind", ["perturbed", "scaled"])
def test_wrong_artifacts_fail_validate(artifacts, kind, tmp_path):
    source, made = artifacts
    out = made[kind]
    files = sorted(p for p in out.iterdir() if p.suffix in (".onnx", ".tflite", ".mlpackage"))
    assert len(files) == 4
    rep_path = tmp_path / "report.json"
    r = bridge("validate", f"{source}:make", *files, "--report", rep_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    rep = report(tmp_path)
    assert not rep["passed"]
    modes = sorted(a["quantization"] for a in rep["artifacts"])
    assert modes == ["fp16", "fp16", "fp32", "fp32"], "validate must infer each file's mode from its tensors"
    for a in rep["artifacts"]:
        assert a["parity"]["status"] == "failed"
        m = a["parity"]["outputs"]["output"]
        if kind == "scaled":
            assert m["cosine"] > 0.9999 and m["rel_l2"] == pytest.approx(0.3, rel=1e-2)
            assert m["snr_db"] < 15


def test_correct_artifacts_pass_validate(artifacts, tmp_path):
    source, made = artifacts
    out = tmp_path / "good"
    r = bridge("convert", f"{source}:make", "--target", "onnx", "--target", "tflite", "--target", "coreml",
               "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    files = sorted(p for p in out.iterdir() if p.suffix in (".onnx", ".tflite", ".mlpackage"))
    assert len(files) == 3
    r = bridge("validate", f"{source}:make", *files)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "all artifacts passed parity" in r.stderr


def test_error_attributed_to_export_stage(artifacts, tmp_path):
    """A stage-wise table tells where error entered: a correct ONNX -> TFLite step has tiny
    onnx->target error even when the artifact as a whole fails against the source."""
    source, made = artifacts
    rep = report(made["perturbed"])
    a = artifact(rep, "tflite", "fp32")
    assert a["parity"]["stages"]["onnx->target"]["output"]["rel_l2"] < 1e-5
