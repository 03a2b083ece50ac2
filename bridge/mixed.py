"""The mixed-precision search: the fewest layers kept in higher precision for a mode to pass.

A mixed mode (`ModeSpec.mixed`) whose lane was given no `keep` list starts from the whole graph in
the lower precision. If that fails its thresholds, the layers are ranked, on calibration samples,
never on the parity samples that judge: for int8, by the isolated profile of per-layer localisation
measured on that first artifact (`ranked_layers`: what each layer's own error, computed from exact
inputs, leaves at the outputs); for fp16, by `converters/onnx/sensitivity.py` on the hub. A ranked
unit is a layer as the artifact computes it: every hub node of its fused group. The search keeps
the top 1, 2, 4, 8... units until the artifact passes parity, then bisects between the last
failing and the first passing count for the fewest (a lane with a wider step, `Search.widen`,
tries it as that lane declares). Every step is a real artifact judged on the
parity samples by the lane's runtime (a lane with `remix` cuts it from the first step's files, not
converting again). The search is deterministic for a given ranking (same ranking: same steps) and
bounded: it never starts a step that would take it past `budget` times (`--search-budget`, default 4) the first step's
conversion and parity time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from bridge.base.lane import Widen
from bridge.options import SEARCH_BUDGET

SHOWN = 5  # layers named when the search gives up


@dataclass(frozen=True)
class Step:
    kept: tuple[str, ...]  # the user's names, one per layer (a fused group by the name it is known by)
    passed: bool
    summary: str  # the worst output's figures, or why the step did not run
    seconds: float
    wide: bool = False  # the lane's wider step (`Widen`): TFLite's readers kept too, Core ML's float16 weights
    # what the step stands for: its seconds, or more when its conversion came from the stage cache
    # (the conversion's own time as first measured), so a warm cache does not shrink the budget
    cost: float = 0.0
    key: str = "all_readers"  # what the lane calls its wider step in the report (`Widen.key`)
    second: bool = False  # the lane's second tier (`Widen.second`)
    second_key: str = ""  # what the lane calls it in the report; "": the lane has none

    def to_json(self) -> dict:
        return {"kept": len(self.kept), "layers": list(self.kept), "passed": self.passed, "summary": self.summary,
                "seconds": round(self.seconds, 3), self.key: self.wide,
                **({self.second_key: self.second} if self.second_key else {})}


Unit = str | tuple[str, ...]  # a layer: its node names (a fused group), the one it is known by first


def ranked_layers(localization: Mapping) -> list[tuple[str, ...]]:
    """The layers of a localisation (`bridge.localization`) with an isolated profile, most costly
    first: those carried to the outputs by their output SNR, then the rest by their own tensor's
    SNR; ties in the hub's order. Each is (the node it is named by, the rest of its fused group, and
    "@" + the artifact tensor it was found at: a lane that keeps ops by tensor keeps that op even where
    the converter's report names no tensor for the group's nodes). A
    layer the artifact holds at a QUANTIZE or DEQUANTIZE is left out: converting between int8 and
    float is never what to keep, and a graph output's DEQUANTIZE only repeats the error of what
    computed it."""
    def cost(layer: Mapping) -> tuple[int, float]:
        iso = layer.get("isolated") or {}
        carried, own = iso.get("output_snr_db"), iso.get("snr_db")
        if carried is not None:
            return 0, carried
        return 1, own if own is not None else math.inf

    layers = [layer for layer in localization.get("layers") or () if layer.get("isolated")
              and not str(layer.get("artifact_op") or "").lower().endswith("quantize")]
    return [tuple(dict.fromkeys([layer["node"], *layer.get("nodes", ()),
                                 *([f"{HELD}{layer['artifact_tensor']}"] if layer.get("artifact_tensor") else [])]))
            for layer in sorted(layers, key=cost)]


HELD = "@"  # a unit's last name may be the artifact tensor localisation found the layer at: "@<tensor>"


@dataclass
class Search:
    """`attempt(kept, wide)` makes and judges an artifact with the layers `kept` (units: each a fused
    group's node names, the one it is known by first) in higher precision, returning (passed,
    summary[, cost]: the step's work as first measured, when the stage cache made it faster);
    `rank()` gives units (or single node names), most sensitive first.

    With `widen` (`bridge.base.lane.Widen`) a lane has a wider step for the same kept layers
    (`wide`). TFLite's (`tier` False) keeps every reader of the kept layers, not only the weightless
    ones, so a kept layer's output is float for all of them, at the bytes of those readers' weights:
    a count whose step fails is tried once more wide, and the first variant that passes is the one
    bisected. TFLite also has a second tier (`Widen.second`, `attempt(kept, wide, second)`): its
    first keeps a layer with a hybrid kernel at int8 weights, float activations; the same search,
    counting as a tiered lane's does, runs again with the kept layers' float32 weights (`second`)
    only once every ranked layer failed so (each count still tried with every reader too).
    Core ML's (`tier` True) gives the kept layers their float16 weights back, doubling
    their bytes, so the narrow search (kept layers at int8 weights, float16 activations) runs first,
    counting 1, every ranked layer, then 2, 4, 8...: its second step says whether keeping
    activations alone can pass at all. Only when that step fails (some weights are what hurts) does
    the same search run again wide. Such a lane may also offer `every` (its every layer, unranked):
    keeping all of them narrow is then tried before the ranking, which can cost more than the
    budget leaves; if it passes, the search has a passing file whatever the ranking costs, and looks
    for fewer (the ranked counts below all of them); if it fails, the narrow search is skipped."""

    attempt: Callable[[tuple[tuple[str, ...], ...], bool], tuple[bool, str] | tuple[bool, str, float]]
    rank: Callable[[], Sequence[Unit]]
    names: dict[str, str]  # hub name -> the user's
    steps: list[Step] = field(default_factory=list)
    ranked: list[tuple[str, ...]] = field(default_factory=list)
    rank_seconds: float = 0.0
    budget_seconds: float = 0.0
    outcome: str = ""
    tried: int = 0  # units kept by the largest step so far
    ranking_method: str = ""
    widen: Widen | None = None
    wide: bool = False
    every: Callable[[], Sequence[Unit]] | None = None  # a tiered lane's every layer, unranked
    chosen: int | None = None  # the index in `steps` of the answer's step
    remixed: bool = False  # later steps are cut from the first step's files (the lane's `remix`), not converted
    narrow_failed: bool = False  # a tiered lane's narrow search failed keeping every layer: the wide one ran
    second: bool = False  # the lane's second tier (`Widen.second`) is in force
    _passed: dict = field(default_factory=dict)  # (kept units, wide, second) -> the index of its passing step
    budget: float | None = None  # the whole search: at most this many times the first step's (`--search-budget`)

    def run(self) -> tuple[tuple[str, ...], ...] | None:
        """The kept units of the fewest-kept passing step, or None; `outcome` says why."""
        start = time.perf_counter()
        if self._try((), start):
            self.outcome = "passed with every layer in the lower precision"
            return ()
        if self.budget is None:
            self.budget = SEARCH_BUDGET
        self.budget_seconds = self.budget * self.steps[0].cost
        everything, every = self._every(start)
        t = time.perf_counter()
        self.ranked = [(u,) if isinstance(u, str) else tuple(u) for u in self.rank()]
        self.rank_seconds = time.perf_counter() - t
        best, failed = (None, 0) if every is False else self._climb(start, known=bool(every))
        if best is None and every is not True and self.widen and self.widen.tier and self.ranked and (
                every is False or self.tried == len(self.ranked)):
            self.wide, self.narrow_failed = True, True
            best, failed = self._climb(start)
        if best is None and every is not False and self.widen and self.widen.second and self.ranked \
                and self.tried == len(self.ranked):
            self.wide, self.second, self.narrow_failed = False, True, True
            best, failed = self._climb(start)
        while best is not None and best - failed > 1 and self._affordable(start):
            middle = (failed + best) // 2
            if self._try(self.prefix(middle), start):
                best = middle
            else:
                failed = middle
        answer = self.prefix(best) if best is not None else everything if every else None
        self.chosen = self._passed.get((answer, self.wide and best is not None, self.second and best is not None))
        self.outcome = self._outcome(best, failed) if best is not None or not every else (
            f"passed keeping every layer ({len(everything)}); no fewer passed within its budget")
        return answer

    def _every(self, start: float) -> tuple[tuple[tuple[str, ...], ...], bool | None]:
        """A tiered lane's every layer kept narrow, before the ranking: (the units, whether that
        passed; None: not tried)."""
        units = tuple((u,) if isinstance(u, str) else tuple(u) for u in self.every()) if self.every else ()
        if not units or not (self.widen and self.widen.tier) or not self._affordable(start):
            return units, None
        return units, self._try(units, start)

    def prefix(self, count: int) -> tuple[tuple[str, ...], ...]:
        return tuple(self.ranked[:count])

    def _climb(self, start: float, known: bool = False) -> tuple[int | None, int]:
        """Counts kept until one passes (or every ranked layer failed, or the budget is spent): the
        first passing count and the largest failing one below it. `known`: every layer kept is known
        to pass, so only fewer are tried."""
        n = len(self.ranked)
        counts = list(_doubling(n))
        if self.widen and (self.widen.tier or self.widen.second and not self.second) and n:
            counts = [c for c in dict.fromkeys([1, n, *counts]) if not known or c < n]
        best, failed, self.tried = None, 0, 0
        for count in counts:
            if best is not None and count >= best or not self._affordable(start):
                break
            self.tried = max(self.tried, count)
            if self._try(self.prefix(count), start) or self._widened(count, start):
                best = count
            else:
                failed = max(failed, count)
                if count == n:
                    break
        return best, failed

    def _widened(self, count: int, start: float) -> bool:
        """The same count kept wide, where the lane retries each failing count so and the budget allows."""
        if not self.widen or self.widen.tier or self.wide or not self._affordable(start):
            return False
        self.wide = True
        if self._try(self.prefix(count), start):
            return True
        self.wide = False
        return False

    def _try(self, kept: tuple[tuple[str, ...], ...], start: float) -> bool:
        t = time.perf_counter()
        second = (self.second,) if self.widen and self.widen.second else ()
        passed, summary, *cost = self.attempt(kept, self.wide, *second)  # cost: the step's work as first measured
        if passed:
            self._passed[(kept, self.wide, self.second)] = len(self.steps)
        named = tuple(dict.fromkeys(self.names.get(u[0], u[0]) for u in kept))
        seconds = time.perf_counter() - t
        self.steps.append(Step(named, passed, summary, seconds, self.wide, max([seconds, *cost]),
                               self.widen.key if self.widen else "all_readers", self.second,
                               self.widen.second if self.widen else ""))
        return passed

    def _affordable(self, start: float) -> bool:
        """Whether one more step (as long as the slowest so far) fits in the budget. With `remixed` (a
        lane with `remix`, whose later steps are cut from the first step's files, not converted) the
        first step is not what a step costs: until a later one ran, a step is taken to cost nothing,
        so at most that one step can pass the budget (by a few seconds)."""
        later = [s.seconds for s in self.steps[1:]]
        longest = max(later) if later else (0.0 if self.remixed else self.steps[0].cost)
        return time.perf_counter() - start + longest <= self.budget_seconds

    def _outcome(self, best: int | None, failed: int) -> str:
        key = self.widen.second if self.second else self.widen.key if self.widen else ""
        wide = f", {key.replace('_', ' ')} too" if self.narrow_failed else ""
        if best is not None:
            return f"passed keeping {best} of {len(self.ranked)} layers{wide}"
        if not self.ranked:
            return (f"mixed-precision search did not meet the thresholds within its budget "
                    f"({self.budget_seconds:.0f} s, {self.budget:g}x the plain mode's): no layer was ranked "
                    f"({self.ranking_method})")
        tried = self.tried
        nxt = [self.names.get(u[0], u[0]) for u in self.ranked[tried:tried + SHOWN]]
        why = "within its budget" if len(self.ranked) > tried else "even with every layer kept"
        rescue = (f"; layers it could not rescue (ranked next): {', '.join(nxt)}" if nxt else
                  f"; the most sensitive: {', '.join(self.names.get(u[0], u[0]) for u in self.ranked[:SHOWN])}")
        return (f"mixed-precision search did not meet the thresholds {why} ({self.budget_seconds:.0f} s, "
                f"{self.budget:g}x the plain mode's; tried keeping up to {tried} of {len(self.ranked)} layers{wide})"
                f"{rescue}")

    def to_json(self) -> dict:
        return {"outcome": self.outcome, "budget_seconds": round(self.budget_seconds, 3),
                "rank_seconds": round(self.rank_seconds, 3), "ranked": len(self.ranked),
                "ranking_method": self.ranking_method,
                "ranking": [self.names.get(u[0], u[0]) for u in self.ranked[:20]],
                "steps": [s.to_json() for s in self.steps]}


def _doubling(n: int):
    count = 1
    while count < n:
        yield count
        count *= 2
    if n:
        yield n
