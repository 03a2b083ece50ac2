"""Parity verdicts from runtime outputs: which stage is blamed, NaN/Inf never equal, and the table."""

from __future__ import annotations

import numpy as np
import pytest
from rich.console import Console

from bridge.base.modes import FP32_PARITY
from bridge.commands.common import parity_table
from bridge.parity import judge, noise_floor
from bridge.report import ArtifactRecord, Report
from tests.conftest import with_nonfinite

REF = np.linspace(-1.0, 1.0, 24, dtype=np.float32).reshape(4, 6)
FP32 = {"y": FP32_PARITY}



def _judge(actual, source, onnx=None):
    return judge(actual=[{"y": actual}], source=[{"y": source}], onnx=None if onnx is None else [{"y": onnx}],
                 names=["y"], thresholds=FP32, runtime="test", inputs="synthetic", calibration=None, sizes={})


def test_inf_from_the_target_is_blamed_on_the_target():
    parity = _judge(with_nonfinite(REF, inf=4), REF, onnx=REF)
    assert parity.status == "failed"
    assert parity.reason == "y: the artifact has 4 Inf (error introduced at onnx->target)"
    assert parity.outputs["y"]["nonfinite"] == {"nan": 0, "inf": 4}
    assert parity.stages["onnx->target"]["y"]["nonfinite"] == {"nan": 0, "inf": 4}
    assert set(parity.stages) == {"onnx->target"} and parity.introduced_at == "onnx->target"


def test_nan_from_the_export_is_blamed_on_the_export():
    parity = _judge(with_nonfinite(REF, nan=1), REF, onnx=with_nonfinite(REF, nan=1))
    assert parity.reason == "y: the artifact has 1 NaN (error introduced at source->onnx)"


def test_source_nan_is_the_sources_fault_and_no_artifact_passes():
    bad = with_nonfinite(REF, nan=5)
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
    assert "nan/inf" not in _render(Report("convert", source={}, artifacts=[ok]))
    bad = with_nonfinite(REF, nan=5)
    src = ArtifactRecord("onnx", "fp32", path="m.onnx", parity=_judge(bad, bad))
    tgt = ArtifactRecord("tflite", "fp16", path="m.tflite", parity=_judge(with_nonfinite(REF, inf=2), REF))
    text = _render(Report("convert", source={}, artifacts=[ok, src, tgt]))
    assert "nan/inf" in text
    assert "5 NaN (source 5 NaN)" in text and "2 Inf" in text


def _floor(source: np.ndarray, nudged: np.ndarray) -> dict:
    return noise_floor([{"y": source}], [{"y": nudged}], ["y"])


def test_a_failure_within_the_sources_noise_floor_says_the_source_is_ill_conditioned():
    rng = np.random.default_rng(0)
    wobble = REF * (1 + np.float32(3e-5) * rng.standard_normal(REF.shape).astype(np.float32))
    floor = _floor(REF, wobble)  # the source moves by rel_l2 ~3e-5 when its inputs move by one ulp
    assert 1e-5 < floor["y"].rel_l2 < 1e-4
    off = REF * (1 + np.float32(1e-4) * rng.standard_normal(REF.shape).astype(np.float32))  # fails fp32 (1e-5)
    parity = judge(actual=[{"y": off}], source=[{"y": REF}], onnx=None, names=["y"], thresholds=FP32,
                   runtime="test", inputs="synthetic", calibration=None, sizes={}, floor=floor)
    assert parity.status == "failed"
    assert "the source itself moves by y (rel_l2 " in parity.reason and "ill-conditioned" in parity.reason
    assert parity.outputs["y"]["source_noise_floor"]["rel_l2"] == pytest.approx(floor["y"].rel_l2, rel=1e-3)


def test_a_failure_far_above_the_noise_floor_is_the_conversions():
    floor = _floor(REF, np.nextafter(REF, np.float32(np.inf)))  # a well-conditioned source: ~1e-7
    assert 0 < floor["y"].rel_l2 < 1e-6
    parity = judge(actual=[{"y": REF * np.float32(1.01)}], source=[{"y": REF}], onnx=None, names=["y"],
                   thresholds=FP32, runtime="test", inputs="synthetic", calibration=None, sizes={}, floor=floor)
    assert parity.status == "failed" and "ill-conditioned" not in parity.reason


def test_the_console_names_twenty_kept_layers_and_points_to_the_report_for_the_rest(capsys):
    from pathlib import Path

    from bridge.commands.common import print_outcome

    report = Report(command="convert", source={"path": "m.onnx"})
    report.path = Path("out/report.json")
    report.artifacts = [ArtifactRecord("tflite", "int8-mixed", details={
        "kept_layers": [f"layer{i}" for i in range(25)], "kept_precision": "float32"})]
    print_outcome(report)
    out = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert "tflite/int8-mixed: 25 layer(s) kept in float32: layer0, layer1," in out
    assert "layer19 and 5 more (every one: out/report.json, kept_layers)" in out and "layer20" not in out
