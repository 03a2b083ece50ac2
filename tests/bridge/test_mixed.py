"""The mixed-precision search's bookkeeping on a known answer: the conversions it drives are
tested end to end in tests/e2e/test_mixed_precision.py; here an attempt passes exactly when the
kept layers cover a chosen set, so the fewest prefix of the ranking is known."""

from __future__ import annotations

import time

import pytest

from bridge import mixed
from bridge.base.lane import Widen
from bridge.mixed import Search

RANKED = [f"n{i}" for i in range(20)]


def searcher(needed: set[str], ranked=RANKED) -> Search:
    return Search(attempt=lambda kept, wide: (needed <= {n for unit in kept for n in unit}, f"kept {len(kept)}"),
                  rank=lambda: ranked, names={n: n.upper() for n in ranked})


@pytest.mark.parametrize("needed, fewest", [({"n0"}, 1), ({"n0", "n4"}, 5), ({"n2", "n10"}, 11), ({"n19"}, 20)])
def test_keeps_the_fewest_prefix_that_passes(monkeypatch, needed, fewest):
    monkeypatch.setattr(mixed, "SEARCH_BUDGET", 1e9)
    s = searcher(needed)
    assert s.run() == tuple((n,) for n in RANKED[:fewest])
    kept = [st.kept for st in s.steps]
    assert kept[0] == () and not s.steps[0].passed  # starts from the whole graph in low precision
    assert any(len(k) == fewest and st.passed for k, st in zip(kept, s.steps, strict=True))
    assert not any(len(k) == fewest - 1 and st.passed for k, st in zip(kept, s.steps, strict=True))
    assert s.steps[-1].kept[0] == "N0"  # the user's names
    assert s.outcome == f"passed keeping {fewest} of 20 layers"


def test_passes_without_ranking_when_plain_low_precision_passes():
    s = Search(attempt=lambda kept, wide: (True, ""), rank=lambda: pytest.fail("ranked"), names={})
    assert s.run() == () and len(s.steps) == 1


def test_gives_up_naming_the_layers_when_keeping_all_does_not_help(monkeypatch):
    monkeypatch.setattr(mixed, "SEARCH_BUDGET", 1e9)
    s = searcher({"missing"})
    assert s.run() is None
    assert [len(st.kept) for st in s.steps] == [0, 1, 2, 4, 8, 16, 20]
    assert "even with every layer kept" in s.outcome and "N0, N1, N2, N3, N4" in s.outcome


def test_budget_stops_the_search_and_names_the_next_layers(monkeypatch):
    monkeypatch.setattr(mixed, "SEARCH_BUDGET", 0.0)  # no step after the first fits
    s = searcher({"n5"})
    assert s.run() is None and len(s.steps) == 1
    assert "within its budget" in s.outcome and "ranked next): N0, N1" in s.outcome


def test_a_fused_group_is_kept_whole_and_counted_once(monkeypatch):
    """A unit is a layer as the artifact computes it (a Conv with its bias and activation): its
    nodes are kept together, and the steps count and name it once."""
    monkeypatch.setattr(mixed, "SEARCH_BUDGET", 1e9)
    units = [("conv_a", "bias_a", "relu_a"), ("conv_b", "relu_b"), ("conv_c",)]
    s = Search(attempt=lambda kept, wide: ("relu_b" in {n for unit in kept for n in unit}, ""), rank=lambda: units,
               names={})
    assert s.run() == tuple(units[:2])
    assert [(st.kept, st.passed) for st in s.steps] == [((), False), (("conv_a",), False),
                                                        (("conv_a", "conv_b"), True)]
    assert s.to_json()["ranking"] == ["conv_a", "conv_b", "conv_c"]
    assert s.outcome == "passed keeping 2 of 3 layers"


def test_ranked_layers_from_the_isolated_profile():
    """Layers whose own error was carried to the outputs come first, by the SNR it leaves there; the
    rest follow by their own tensor's SNR; a layer without an isolated figure, or held at a
    DEQUANTIZE (a graph output's), is not ranked."""
    loc = {"layers": [
        {"node": "a", "nodes": ["a"], "isolated": {"snr_db": 5.0}},
        {"node": "b", "nodes": ["b", "b_bn", "b_relu"], "isolated": {"snr_db": 20.0, "output_snr_db": 30.0}},
        {"node": "c", "nodes": ["c"], "isolated": {"snr_db": 40.0, "output_snr_db": 9.0}},
        {"node": "d", "nodes": ["d"]},
        {"node": "e", "nodes": ["e_pre", "e"], "isolated": {"snr_db": 3.0}},
        {"node": "f", "nodes": ["f"], "artifact_op": "DEQUANTIZE", "isolated": {"snr_db": -7.0, "output_snr_db": -7.0}},
    ]}
    assert mixed.ranked_layers(loc) == [("c",), ("b", "b_bn", "b_relu"), ("e", "e_pre"), ("a",)]


def test_a_failing_count_is_tried_again_with_every_reader_kept(monkeypatch):
    """A lane that keeps layers' readers (`widen`): a count that fails with the weightless readers
    only is tried once more with all of them; the variant that passes is the one bisected."""
    monkeypatch.setattr(mixed, "SEARCH_BUDGET", 1e9)

    def attempt(kept, wide):
        names = {n for unit in kept for n in unit}
        return ("n1" in names and wide) or {"n0", "n1", "n2", "n3", "n4"} <= names, ""

    s = Search(attempt=attempt, rank=lambda: RANKED, names={}, widen=Widen("all_readers"))
    assert s.run() == (("n0",), ("n1",))
    assert [(len(st.kept), st.wide, st.passed) for st in s.steps] == [
        (0, False, False), (1, False, False), (1, True, False), (2, False, False), (2, True, True)]
    assert s.steps[-1].to_json()["all_readers"] is True


def test_a_second_tier_runs_only_once_every_layer_failed_in_the_first(monkeypatch):
    """TFLite (`Widen.second`): the first tier (int8 weights) counts 1, every layer, 2, 4..., each
    failing count retried with every reader kept; a layer whose int8 weights are what hurts fails
    there at every count, and the second tier (float32 weights) finds it alone."""
    monkeypatch.setattr(mixed, "SEARCH_BUDGET", 1e9)

    def attempt(kept, wide, second):
        return "n0" in {n for unit in kept for n in unit} and second, ""

    s = Search(attempt=attempt, rank=lambda: RANKED, names={}, widen=Widen("all_readers", second="float32_weights"))
    assert s.run() == (("n0",),)
    assert [(len(st.kept), st.wide, st.second, st.passed) for st in s.steps] == [
        (0, False, False, False), (1, False, False, False), (1, True, False, False), (20, False, False, False),
        (20, True, False, False), (1, False, True, True)]
    assert s.steps[-1].to_json()["float32_weights"] is True and s.steps[-1].to_json()["all_readers"] is False
    assert s.outcome == "passed keeping 1 of 20 layers, float32 weights too"


def test_a_first_step_from_the_stage_cache_is_priced_at_its_first_measured_cost():
    """A warm cache returns the plain mode's conversion at once: the budget is still 4x what that
    conversion took when it ran (the attempt's third value), not 4x the instant it took to restore."""
    s = Search(attempt=lambda kept, wide: (bool(kept), "", 30.0), rank=lambda: ["a", "b"], names={})
    assert s.run() == (("a",),)
    assert s.steps[0].seconds < 1 and s.steps[0].cost == 30.0
    assert s.budget_seconds == 120.0


def tiered(needed: set[str], weights: set[str]) -> Search:
    """A tiered lane (Core ML): an attempt passes when the kept layers cover `needed` and, for those
    in `weights`, are kept wide (their float16 weights back)."""
    def attempt(kept, wide):
        names = {n for unit in kept for n in unit}
        return needed <= names and (wide or not (weights & names) or not weights), ""

    return Search(attempt=attempt, rank=lambda: RANKED, names={}, widen=Widen("float16_weights", tier=True))


def test_a_tiered_lane_keeps_activations_only_when_that_passes(monkeypatch):
    """Narrow first, counting 1, every layer, then 2, 4...: keeping every layer's activations passes,
    so no step is wide and the fewest is bisected as before."""
    monkeypatch.setattr(mixed, "SEARCH_BUDGET", 1e9)
    s = tiered({"n0", "n4"}, set())
    assert s.run() == tuple((n,) for n in RANKED[:5])
    assert [(len(st.kept), st.wide, st.passed) for st in s.steps][:5] == [
        (0, False, False), (1, False, False), (20, False, True), (2, False, False), (4, False, False)]
    assert not any(st.wide for st in s.steps)
    assert s.outcome == "passed keeping 5 of 20 layers"


def test_a_tiered_lane_restores_weights_only_once_every_layer_kept_narrow_failed(monkeypatch):
    """A layer whose weights are what hurts: narrow fails at 1 and at every layer, then the same
    search runs wide and keeps that layer (with its weights) alone."""
    monkeypatch.setattr(mixed, "SEARCH_BUDGET", 1e9)
    s = tiered({"n0"}, {"n0"})
    assert s.run() == (("n0",),)
    assert [(len(st.kept), st.wide, st.passed) for st in s.steps] == [
        (0, False, False), (1, False, False), (20, False, False), (1, True, True)]
    assert s.steps[-1].to_json()["float16_weights"] is True and "all_readers" not in s.steps[-1].to_json()
    assert s.outcome == "passed keeping 1 of 20 layers, float16 weights too"


def test_a_tiered_lane_that_cannot_pass_says_both_tiers_failed(monkeypatch):
    monkeypatch.setattr(mixed, "SEARCH_BUDGET", 1e9)
    s = tiered({"missing"}, set())
    assert s.run() is None
    assert [(len(st.kept), st.wide) for st in s.steps] == [(0, False), (1, False), (20, False), (1, True),
                                                           (20, True)]
    assert "even with every layer kept" in s.outcome and "layers, float16 weights too)" in s.outcome


def test_a_tiered_lane_with_nothing_ranked_tries_no_step(monkeypatch):
    monkeypatch.setattr(mixed, "SEARCH_BUDGET", 1e9)
    s = Search(attempt=lambda kept, wide: (False, ""), rank=lambda: [], names={},
               widen=Widen("float16_weights", tier=True))
    assert s.run() is None and len(s.steps) == 1 and not s.narrow_failed


def every_layer(needed: set[str], weights: set[str], **kw) -> Search:
    """`tiered`, offering every layer unranked (the Core ML lane's `units`)."""
    s = tiered(needed, weights)
    return Search(attempt=s.attempt, names={}, widen=s.widen, every=lambda: RANKED, **kw)


def test_a_tiered_lane_keeps_every_layer_first_then_looks_for_fewer(monkeypatch):
    monkeypatch.setattr(mixed, "SEARCH_BUDGET", 1e9)
    s = every_layer({"n0", "n4"}, set(), rank=lambda: RANKED)
    assert s.run() == tuple((n,) for n in RANKED[:5])
    counts = [(len(st.kept), st.passed) for st in s.steps]
    assert counts[:5] == [(0, False), (20, True), (1, False), (2, False), (4, False)]
    assert counts.count((20, True)) == 1  # every layer is not tried again as a ranked count
    assert len(s.steps[s.chosen].kept) == 5 and s.steps[s.chosen].passed


def test_a_ranking_past_the_budget_still_leaves_every_layer_kept(monkeypatch):
    """The ranking can cost more than the budget leaves: the step keeping every layer, taken before
    it, is the answer then."""
    monkeypatch.setattr(mixed, "SEARCH_BUDGET", 0.2)
    s = every_layer({"n3"}, set(), rank=lambda: (time.sleep(0.3), RANKED)[1], remixed=True)
    s.attempt = (lambda a: lambda kept, wide: (*a(kept, wide), 1.0))(s.attempt)  # the first step: 1 s
    assert s.run() == tuple((n,) for n in RANKED)
    assert [(len(st.kept), st.passed) for st in s.steps] == [(0, False), (20, True)] and s.chosen == 1
    assert s.outcome == "passed keeping every layer (20); no fewer passed within its budget"


def test_every_layer_kept_narrow_failing_goes_to_the_wide_search(monkeypatch):
    monkeypatch.setattr(mixed, "SEARCH_BUDGET", 1e9)
    s = every_layer({"n0"}, {"n0"}, rank=lambda: RANKED)
    assert s.run() == (("n0",),)
    assert [(len(st.kept), st.wide, st.passed) for st in s.steps] == [
        (0, False, False), (20, False, False), (1, True, True)]
    assert s.chosen == 2


def test_the_budget_given_replaces_the_default(monkeypatch):
    """`--search-budget` reaches the search as `budget`: 0 leaves no room for a step after the
    first, whatever the default."""
    monkeypatch.setattr(mixed, "SEARCH_BUDGET", 1e9)
    s = Search(attempt=lambda kept, wide: ("n5" in {n for unit in kept for n in unit}, ""), rank=lambda: RANKED,
               names={n: n for n in RANKED}, budget=0.0)
    assert s.run() is None and len(s.steps) == 1 and "0x the plain mode's" in s.outcome
    assert searcher({"n5"}).run() is not None  # the default, patched wide, lets it find n5
