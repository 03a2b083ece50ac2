"""NaN/Inf end to end: a source outside its domain, and activations float16 cannot hold.

Both models put their non-finite values in fixed columns, whatever the random parity samples are,
so the counts are exact: columns x batch rows x samples.
"""

from __future__ import annotations

import re

import pytest

from tests.conftest import artifact, bridge, report, write_module

pytestmark = pytest.mark.slow

SAMPLES = 4
BATCH = 2

DOMAIN = """
    import torch
    from torch import nn

    class Domain(nn.Module):
        def __init__(self):
            super().__init__()
            # |x| - 1e4 < 0: log is NaN in columns 1 and 3. |x| + 100 > 88.7: exp is Inf in column 5.
            self.register_buffer("offset", torch.tensor([1.0, -1e4, 1.0, -1e4, 1.0, 1.0]))
            self.register_buffer("shift", torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 100.0]))

        def forward(self, x):
            return torch.log(x.abs() + self.offset), torch.exp(x.abs() + self.shift), x * 2.0

    def make():
        return Domain().eval(), torch.randn(2, 6)
"""

OVERFLOW = """
    import torch
    from torch import nn

    class Amplify(nn.Module):
        def forward(self, x):
            return x * 300.0

    class Overflow(nn.Module):
        # Columns 0 and 3 reach 300 * 300 * (1 + |x| / 1000) > 65504 after `amplify`, the others
        # stay near 9000; everything comes back to ~1 before the output. Every constant fits fp16.
        def __init__(self):
            super().__init__()
            self.register_buffer("offset", torch.tensor([1.0, 0.1, 0.1, 1.0, 0.1, 0.1]))
            self.amplify = Amplify()

        def forward(self, x):
            h = self.amplify((x.abs() * 1e-3 + self.offset) * 300.0)
            return h / 300.0 / 300.0

    def make():
        return Overflow().eval(), torch.randn(2, 6)
"""


GAIN = """
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Gain(nn.Module):
        def forward(self, x):
            return x * 1e5

    class Rescaled(nn.Module):
        # Unit rows / 100 * 1e5 / 1000: every activation stays within +-1000, but the constant 1e5
        # does not. F.normalize's epsilon (1e-12) rounds to zero in float16, harmlessly here: no
        # sample has an all-zero row.
        def __init__(self):
            super().__init__()
            self.gain = Gain()

        def forward(self, x):
            return self.gain(F.normalize(x) / 100.0) / 1000.0

    def make():
        return Rescaled().eval(), torch.randn(2, 6)
"""


def test_source_nan_and_inf_counted_per_output_and_nothing_passes(tmp_path):
    src = write_module(tmp_path / "domain.py", DOMAIN)
    out = tmp_path / "out"
    r = bridge("convert", f"{src}:make", "--target", "onnx", "--target", "tflite", "--samples", SAMPLES, "--out", out)
    assert r.returncode == 1, r.stderr[-3000:]
    rep = report(out)
    nan = {"nan": 2 * BATCH * SAMPLES, "inf": 0}  # 16
    inf = {"nan": 0, "inf": 1 * BATCH * SAMPLES}  # 8
    none = {"nan": 0, "inf": 0}
    assert rep["source"]["nonfinite"] == {"output_0": nan, "output_1": inf, "output_2": none}
    assert any(w.startswith("the source itself yields NaN/Inf on the parity samples (output_0: 16 NaN; "
                            "output_1: 8 Inf)") for w in rep["warnings"]), rep["warnings"]
    for a in (artifact(rep, "onnx", "fp32"), artifact(rep, "tflite", "fp32")):
        p = a["parity"]
        assert a["error"] is None and p["status"] == "failed"
        outs = p["outputs"]
        assert (outs["output_0"]["nonfinite"], outs["output_0"]["reference_nonfinite"]) == (nan, nan)
        assert (outs["output_1"]["nonfinite"], outs["output_1"]["reference_nonfinite"]) == (inf, inf)
        assert outs["output_0"]["snr_db"] is None
        assert outs["output_2"]["nonfinite"] == none and outs["output_2"]["rel_l2"] == 0  # still judged
        assert p["reason"] == ("output_0: the source has 16 NaN, the artifact has 16 NaN; output_1: the source has "
                               "8 Inf, the artifact has 8 Inf (the source itself yields NaN/Inf on the parity "
                               "samples: fix the model or its inputs)")
    table = r.stdout
    assert "nan/inf" in table and "16 NaN (source 16 NaN)" in table and "8 Inf (source 8 Inf)" in table
    assert "Traceback" not in r.stderr


def test_fp16_overflow_warned_before_conversion_and_counted_as_inf(tmp_path):
    src = write_module(tmp_path / "overflow.py", OVERFLOW)
    out = tmp_path / "out"
    r = bridge("convert", f"{src}:make", "--target", "tflite", "--target", "coreml", "--quantize", "tflite=fp32,fp16",
               "--quantize", "coreml=fp16", "--samples", SAMPLES, "--out", out)
    assert r.returncode == 1, r.stderr[-3000:]
    rep = report(out)
    [warning] = [w for w in rep["warnings"] if w.startswith("fp16 overflow")]
    assert "1 tensor(s) exceed 65504" in warning
    assert "/amplify/Mul (tensor /amplify/Mul_output_0): max |x| " in warning  # the torch node's own name
    peak = float(re.search(r"max \|x\| ([0-9.]+e\+[0-9]+)", warning).group(1))
    assert 90000 <= peak <= 90000 * 1.01
    assert "Affected: tflite/fp16, coreml/fp16 (" in warning and "tflite/fp32" not in warning
    # Measured on the hub, not on any artifact, in the hub's own parity run (one onnxruntime session):
    # on two cores it runs beside the lanes' conversions (no fp16 mode converts with the ranges), and
    # the warning names both fp16 artifacts.
    assert "measuring activations for fp16" in r.stderr.lower() and "Converting to tflite" in r.stderr
    stages = [s["stage"] for s in rep["stage_runs"]]
    assert stages.count("onnx-runtime") == 1 and "activation-ranges" not in stages

    coreml = artifact(rep, "coreml", "fp16")["parity"]
    assert coreml["status"] == "failed"
    assert coreml["outputs"]["output"]["nonfinite"] == {"nan": 0, "inf": 2 * BATCH * SAMPLES}  # 16
    assert coreml["outputs"]["output"]["reference_nonfinite"] == {"nan": 0, "inf": 0}
    # then the per-layer localisation's line: the first layer where the artifact leaves the hub
    assert coreml["reason"].startswith("output: the artifact has 16 Inf (error introduced at onnx->target); ")
    assert coreml["localization"]["status"] == "localized", coreml["localization"]
    assert rep["source"]["nonfinite"] == {"output": {"nan": 0, "inf": 0}}
    # TFLite's CPU kernels widen fp16 files to fp32: warned (GPU delegates run fp16), yet parity holds here.
    assert artifact(rep, "tflite", "fp16")["parity"]["passed"]
    assert artifact(rep, "tflite", "fp32")["parity"]["passed"]
    assert "16 Inf" in r.stdout


def test_no_fp16_mode_no_range_pass(tmp_path):
    src = write_module(tmp_path / "overflow.py", OVERFLOW)
    out = tmp_path / "out"
    r = bridge("convert", f"{src}:make", "--target", "onnx", "--samples", SAMPLES, "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "measuring activations" not in r.stderr.lower()
    assert not [w for w in report(out)["warnings"] if "fp16" in w]
    assert "nan/inf" not in r.stdout


def test_fp16_constants_float16_cannot_hold_keep_parity_and_vanishing_ones_are_warned(tmp_path):
    """TFLite's fp16 file keeps 1e5 (TensorFlow's converter clamped it to 65504: the output scaled by
    0.655, SNR 9.3 dB) and F.normalize's 1e-12 in float32; Core ML keeps the op reading 1e5 in fp32.
    Only the epsilon is named, for Core ML, where it rounds to zero."""
    src = write_module(tmp_path / "gain.py", GAIN)
    out = tmp_path / "out"
    r = bridge("convert", f"{src}:make", "--target", "tflite", "--target", "coreml", "--quantize", "tflite=fp16",
               "--quantize", "coreml=fp16", "--samples", SAMPLES, "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = report(out)
    assert [w for w in rep["warnings"] if w.startswith("fp16")] == [
        "fp16 constants: 1 single-valued float constant(s) are at or below 2**-25 (half the smallest float16 "
        "subnormal) and round to zero in float16, where an epsilon no longer keeps a division or square root "
        "from 0: initializer /Constant_output_0: |x| 1e-12. Affected: coreml/fp16"]
    tflite = artifact(rep, "tflite", "fp16")["parity"]
    assert tflite["passed"] and tflite["outputs"]["output"]["snr_db"] > 60
    assert artifact(rep, "coreml", "fp16")["parity"]["passed"]
