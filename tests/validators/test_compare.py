"""The comparison is the verdict: these pin its arithmetic and its refusals."""

import math

import numpy as np
import pytest

from bridge.base.modes import FP16_PARITY, FP32_PARITY, FULL_INT, WEIGHT_ONLY, Thresholds
from bridge.validators.compare import SNR_CAP_DB, NonFinite, compare, failures, metrics

BUILT_IN = {"fp32": FP32_PARITY, "fp16": FP16_PARITY, "weight-only": WEIGHT_ONLY, "full-int": FULL_INT}

rng = np.random.default_rng(0)
REF = rng.standard_normal((4, 10)).astype(np.float32)


def test_identical_outputs_are_exact():
    m = metrics(REF, REF)
    assert m.max_abs == 0 and m.rel_l2 == 0 and m.cosine == pytest.approx(1.0) and m.snr_db == SNR_CAP_DB


def test_metrics_match_their_definitions():
    noise = rng.standard_normal(REF.shape).astype(np.float32) * 0.01
    m = metrics(REF + noise, REF)
    a, b = (REF + noise).astype(np.float64).ravel(), REF.astype(np.float64).ravel()
    assert m.rel_l2 == pytest.approx(np.linalg.norm(a - b) / np.linalg.norm(b))
    assert m.snr_db == pytest.approx(10 * math.log10(np.sum(b**2) / np.sum((a - b) ** 2)))
    assert m.cosine == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    assert m.max_abs == pytest.approx(np.abs(a - b).max())


def test_scaled_output_fails_every_mode_despite_cosine_one():
    m = metrics(REF * 1.3, REF)
    assert m.cosine == pytest.approx(1.0)
    for mode, t in BUILT_IN.items():
        assert failures(m, t), f"{mode} accepted an output scaled by 1.3"


def test_nan_is_never_equal():
    bad = REF.copy()
    bad[0, 0] = np.nan
    m = metrics(bad, REF)
    assert m.nonfinite == NonFinite(nan=1)
    assert failures(m, Thresholds()) == ["the artifact has 1 NaN"]
    both = metrics(bad, bad)
    assert failures(both, Thresholds()), "NaN in both must still fail"


def test_inf_fails():
    bad = REF.copy()
    bad[1, 1] = np.inf
    assert failures(metrics(bad, REF), FP16_PARITY)


def test_thresholds_per_mode():
    fp16_like = REF + rng.standard_normal(REF.shape).astype(np.float32) * 1e-3
    m = metrics(fp16_like, REF)
    assert not failures(m, FP16_PARITY)
    assert failures(m, FP32_PARITY)


def test_compare_names_missing_and_mismatched_outputs():
    result = compare({"a": [REF]}, {"a": [REF], "b": [REF]}, {"a": Thresholds(), "b": Thresholds()})
    assert not result and "b: output missing" in result.reason()
    result = compare({"a": [REF[:2]]}, {"a": [REF]}, {"a": Thresholds()})
    assert not result and "shape mismatch" in result.reason()


def test_zero_reference():
    z = np.zeros(5, np.float32)
    assert metrics(z, z).rel_l2 == 0
    assert failures(metrics(z + 1, z), FP32_PARITY)


def test_worst_sample_is_the_one_that_is_off():
    ref = [rng.standard_normal((4, 32)).astype(np.float32) for _ in range(6)]
    act = [r + np.float32(1e-4) * r for r in ref]
    act[4] = ref[4] * np.float32(1.5)  # rel_l2 0.5 on this sample only
    m = metrics(act, ref)
    assert m.worst.sample == 4
    assert m.worst.rel_l2 == pytest.approx(0.5, rel=1e-6)
    assert m.worst.snr_db == pytest.approx(20 * np.log10(2), abs=1e-4)
    assert m.rel_l2 < m.worst.rel_l2  # pooled figures dilute it
    assert metrics(ref[0], ref[0]).worst is None  # one sample: nothing to single out


def test_top_k_agreement_on_class_scores():
    ref = rng.standard_normal((10, 1000)).astype(np.float32)
    act = ref.copy()
    for row in range(3):  # rows 0-2: the top class swaps with the runner-up (still in the top 5)
        first, second = np.argsort(-ref[row])[:2]
        act[row, first], act[row, second] = ref[row, second], ref[row, first]
    act[9] = -ref[9]  # row 9: the top class becomes the lowest
    top = metrics(act, ref).agreement
    assert (top.rows, top.top1, top.top5) == (10, 0.6, 0.9)


def test_no_top_k_for_feature_maps():
    fm = rng.standard_normal((1, 16, 8, 8)).astype(np.float32)
    assert metrics(fm, fm).agreement is None
    assert metrics(np.ones((1, 4), np.float32), np.ones((1, 4), np.float32)).agreement is None
