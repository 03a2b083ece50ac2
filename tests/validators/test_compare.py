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


def test_error_histogram_counts_every_element_in_its_quarter_decade():
    ref = np.zeros(10, np.float64)
    # errors 1e-3 (bin -3.0), 2e-3 (log10 -2.70: bin -2.75), 0.5 (log10 -0.30: bin -0.5), and 7 exact
    actual = ref.copy()
    actual[:3] = [1e-3, -2e-3, 0.5]
    h = metrics(actual, ref).histogram
    assert h.to_json() == {"exact": 7, "log10_bin_width": 0.25, "bins": [[-3.0, 1], [-2.75, 1], [-0.5, 1]]}


def test_error_histogram_sums_over_samples_and_chunks(monkeypatch):
    import bridge.validators.compare as compare_module

    monkeypatch.setattr(compare_module, "CHUNK", 7)  # chunk boundaries inside samples
    samples = [rng.standard_normal((3, 5)).astype(np.float32) for _ in range(4)]
    noisy = [s + rng.standard_normal(s.shape).astype(np.float32) * 1e-2 for s in samples]
    whole = metrics(np.concatenate(noisy), np.concatenate(samples)).histogram
    assert metrics(noisy, samples).histogram == whole
    assert whole.exact + sum(n for _, n in whole.bins) == 60


def test_nonfinite_outputs_have_no_histogram():
    bad = REF.copy()
    bad[0, 0] = np.nan
    assert metrics(bad, REF).to_json(histogram=True)["abs_error_histogram"] is None


def test_report_figures_are_rounded_to_what_they_mean():
    m = _metrics_of(max_abs=0.200257301, mean_abs=6.880727596580982e-07, rel_l2=0.016684834270189464,
                               cosine=0.9998820976883347, snr_db=35.55356205635958)
    assert m.to_json() == {"max_abs": 0.2003, "mean_abs": 6.881e-07, "rel_l2": 0.01668, "cosine": 0.9998821,
                                "snr_db": 35.55, "nonfinite": {"nan": 0, "inf": 0},
                                "reference_nonfinite": {"nan": 0, "inf": 0}}
    # fp32 noise in float64 sums is not a figure: cosine 1 - 3e-14 reads 1.0; a large gap keeps 4 decimals
    assert _metrics_of(cosine=0.9999999999999657).to_json()["cosine"] == 1.0
    assert _metrics_of(cosine=-0.30000001).to_json()["cosine"] == -0.3
    assert _metrics_of(snr_db=300.0).to_json()["snr_db"] == 300.0


def _metrics_of(**figures):
    from bridge.validators.compare import Metrics

    defaults = {"max_abs": 0.0, "mean_abs": 0.0, "rel_l2": 0.0, "cosine": 1.0, "snr_db": 300.0}
    return Metrics(**(defaults | figures))


def test_a_scalar_held_as_one_element_compares_but_other_shapes_do_not():
    """TFLite has no rank-0 tensors: onnx2tf writes a scalar output as [1]."""
    m = metrics(np.array([2.0], np.float32), np.array(2.0, np.float32))
    assert m.rel_l2 == 0.0
    assert metrics(np.array([2.5], np.float32), np.array(2.0, np.float32)).rel_l2 == pytest.approx(0.25)
    with pytest.raises(ValueError, match="shape mismatch"):
        metrics(np.zeros((1, 2), np.float32), np.zeros(2, np.float32))
