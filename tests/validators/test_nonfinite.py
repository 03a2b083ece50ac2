"""NaN and Inf: counted per output and per side, never equal to anything, blamed on the right stage."""

from __future__ import annotations

import json

import numpy as np
from rich.console import Console

from bridge.commands.common import parity_table
from bridge.modes import DEFAULT_THRESHOLDS, Mode, Thresholds
from bridge.parity import judge
from bridge.report import ArtifactRecord, Report
from bridge.validators.compare import NonFinite, compare, failures, metrics

REF = np.linspace(-1.0, 1.0, 24, dtype=np.float32).reshape(4, 6)
FP32 = {"y": DEFAULT_THRESHOLDS[Mode.FP32]}


def _with(x: np.ndarray, nan: int = 0, inf: int = 0) -> np.ndarray:
    out = x.copy().ravel()
    out[:nan] = np.nan
    out[nan:nan + inf] = [np.inf if i % 2 else -np.inf for i in range(inf)]
    return out.reshape(x.shape)


def test_counts_nan_and_inf_separately_over_every_sample():
    assert NonFinite.of([_with(REF, nan=3, inf=2), _with(REF, inf=1)]) == NonFinite(nan=3, inf=3)
    assert NonFinite.of(REF) == NonFinite() and not NonFinite.of(REF)
    assert NonFinite.of(np.arange(4)) == NonFinite()  # integer outputs have none
    assert str(NonFinite(nan=3, inf=3)) == "3 NaN and 3 Inf" and str(NonFinite(inf=1)) == "1 Inf"


def test_artifact_nan_counted_and_metrics_undefined():
    m = metrics(_with(REF, nan=3), REF)
    assert m.nonfinite == NonFinite(nan=3) and m.reference_nonfinite == NonFinite()
    out = m.to_json()
    assert out["nonfinite"] == {"nan": 3, "inf": 0} and out["reference_nonfinite"] == {"nan": 0, "inf": 0}
    assert all(out[k] is None for k in ("max_abs", "mean_abs", "rel_l2", "cosine", "snr_db"))
    json.dumps(out, allow_nan=False)  # the report refuses NaN: undefined metrics are null
    assert failures(m, Thresholds()) == ["the artifact has 3 NaN"]


def test_finite_outputs_report_zero_counts():
    out = metrics(REF, REF).to_json()
    assert out["nonfinite"] == {"nan": 0, "inf": 0} and out["reference_nonfinite"] == {"nan": 0, "inf": 0}


def test_nan_in_both_at_the_same_places_still_fails():
    bad = _with(REF, nan=2, inf=1)
    result = compare({"y": [bad]}, {"y": [bad]}, FP32)
    assert not result
    assert result.reasons["y"] == ["the source has 2 NaN and 1 Inf", "the artifact has 2 NaN and 1 Inf"]


def test_source_nan_fails_even_a_finite_artifact():
    m = metrics(REF, _with(REF, nan=1))
    assert m.reference_nonfinite == NonFinite(nan=1) and not m.nonfinite
    assert failures(m, Thresholds()) == ["the source has 1 NaN"]


def test_inf_fails_every_mode():
    m = metrics(_with(REF, inf=1), REF)
    for mode, t in DEFAULT_THRESHOLDS.items():
        assert failures(m, t) == ["the artifact has 1 Inf"], mode


def test_nan_only_in_one_output_leaves_the_other_judged():
    result = compare({"a": [_with(REF, nan=1)], "b": [REF]}, {"a": [REF], "b": [REF]},
                     {"a": Thresholds(), "b": Thresholds(rel_l2_max=1e-4)})
    assert result.reasons == {"a": ["the artifact has 1 NaN"], "b": []}
    assert result.outputs["b"].rel_l2 == 0


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
