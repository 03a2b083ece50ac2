"""Parity verdicts from runtime outputs: which stage is blamed, NaN/Inf never equal, and the table."""

from __future__ import annotations

import numpy as np
from rich.console import Console

from bridge.base.modes import FP32_PARITY
from bridge.commands.common import parity_table
from bridge.parity import judge
from bridge.report import ArtifactRecord, Report

REF = np.linspace(-1.0, 1.0, 24, dtype=np.float32).reshape(4, 6)
FP32 = {"y": FP32_PARITY}


def _with(x: np.ndarray, nan: int = 0, inf: int = 0) -> np.ndarray:
    out = x.copy().ravel()
    out[:nan] = np.nan
    out[nan:nan + inf] = [np.inf if i % 2 else -np.inf for i in range(inf)]
    return out.reshape(x.shape)

def _judge(actual, source, onnx=None):
    return judge(actual=[{"y": actual}], source=[{"y": source}], onnx=None if onnx is None else [{"y": onnx}],
                 names=["y"], thresholds=FP32, runtime="test", calibration=None, sizes={})


def test_inf_from_the_target_is_blamed_on_the_target():
    parity = _judge(_with(REF, inf=4), REF, onnx=REF)
    assert parity.status == "failed"
    assert parity.reason == "y: the artifact has 4 Inf (error introduced at onnx->target)"
    assert parity.outputs["y"]["nonfinite"] == {"nan": 0, "inf": 4}
    assert parity.stages["onnx->target"]["y"]["nonfinite"] == {"nan": 0, "inf": 4}
    assert parity.stages["source->onnx"]["y"]["nonfinite"] == {"nan": 0, "inf": 0}


def test_nan_from_the_export_is_blamed_on_the_export():
    parity = _judge(_with(REF, nan=1), REF, onnx=_with(REF, nan=1))
    assert parity.reason == "y: the artifact has 1 NaN (error introduced at source->onnx)"


def test_source_nan_is_the_sources_fault_and_no_artifact_passes():
    bad = _with(REF, nan=5)
    parity = _judge(bad, bad, onnx=bad)
    assert not parity and parity.status == "failed"
    assert parity.reason.startswith("y: the source has 5 NaN, the artifact has 5 NaN (the source itself yields NaN/Inf")
    assert "error introduced" not in parity.reason
    assert parity.outputs["y"]["reference_nonfinite"] == {"nan": 5, "inf": 0}


def _render(report: Report) -> str:
    console = Console(width=200, record=True)
    console.print(parity_table(report))
    return console.export_text()


def test_table_shows_nan_inf_column_only_when_needed():
    ok = ArtifactRecord("onnx", "fp32", path="m.onnx", parity=_judge(REF, REF))
    assert "nan/inf" not in _render(Report(source={}, artifacts=[ok]))
    bad = _with(REF, nan=5)
    src = ArtifactRecord("onnx", "fp32", path="m.onnx", parity=_judge(bad, bad))
    tgt = ArtifactRecord("tflite", "fp16", path="m.tflite", parity=_judge(_with(REF, inf=2), REF))
    text = _render(Report(source={}, artifacts=[ok, src, tgt]))
    assert "nan/inf" in text
    assert "5 NaN (source 5 NaN)" in text and "2 Inf" in text
