"""NaN and Inf: counted per output and per side, never equal to anything, blamed on the right stage."""

from __future__ import annotations

import json

import numpy as np

from bridge.base.modes import FP16_PARITY, FP32_PARITY, FULL_INT, WEIGHT_ONLY, Thresholds
from bridge.validators.compare import NonFinite, compare, failures, metrics
from tests.conftest import with_nonfinite

BUILT_IN = {"fp32": FP32_PARITY, "fp16": FP16_PARITY, "weight-only": WEIGHT_ONLY, "full-int": FULL_INT}

REF = np.linspace(-1.0, 1.0, 24, dtype=np.float32).reshape(4, 6)
FP32 = {"y": FP32_PARITY}




def test_counts_nan_and_inf_separately_over_every_sample():
    assert NonFinite.of([with_nonfinite(REF, nan=3, inf=2), with_nonfinite(REF, inf=1)]) == NonFinite(nan=3, inf=3)
    assert NonFinite.of(REF) == NonFinite() and not NonFinite.of(REF)
    assert NonFinite.of(np.arange(4)) == NonFinite()  # integer outputs have none
    assert str(NonFinite(nan=3, inf=3)) == "3 NaN and 3 Inf" and str(NonFinite(inf=1)) == "1 Inf"


def test_artifact_nan_counted_and_metrics_undefined():
    m = metrics(with_nonfinite(REF, nan=3), REF)
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
    bad = with_nonfinite(REF, nan=2, inf=1)
    result = compare({"y": [bad]}, {"y": [bad]}, FP32)
    assert not result
    assert result.reasons["y"] == ["the source has 2 NaN and 1 Inf", "the artifact has 2 NaN and 1 Inf"]


def test_source_nan_fails_even_a_finite_artifact():
    m = metrics(REF, with_nonfinite(REF, nan=1))
    assert m.reference_nonfinite == NonFinite(nan=1) and not m.nonfinite
    assert failures(m, Thresholds()) == ["the source has 1 NaN"]


def test_inf_fails_every_mode():
    m = metrics(with_nonfinite(REF, inf=1), REF)
    for mode, t in BUILT_IN.items():
        assert failures(m, t) == ["the artifact has 1 Inf"], mode


def test_nan_only_in_one_output_leaves_the_other_judged():
    result = compare({"a": [with_nonfinite(REF, nan=1)], "b": [REF]}, {"a": [REF], "b": [REF]},
                     {"a": Thresholds(), "b": Thresholds(rel_l2_max=1e-4)})
    assert result.reasons == {"a": ["the artifact has 1 NaN"], "b": []}
    assert result.outputs["b"].rel_l2 == 0
