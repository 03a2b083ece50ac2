"""Framework-free comparison of output tensors: metrics, thresholds, verdicts.

Nothing here imports a framework; every runner hands over plain numpy arrays.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import zip_longest
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy loads where arrays are compared: a warm run compares none
    import numpy as np

from bridge.base.modes import Thresholds

# An exact match has infinite SNR; JSON has no infinity, so the report caps it here.
SNR_CAP_DB = 300.0
# Error histograms bin |artifact - reference| by quarter decades (x1.78 per bin): fine enough to tell
# fp16 rounding (~1e-3 relative) from int8 steps (~1e-2) on one axis, coarse enough to stay ~40 bins.
BINS_PER_DECADE = 4


@dataclass(frozen=True)
class NonFinite:
    """How many NaN and Inf values one output holds over every sample. NaN never equals anything
    (not even NaN), so any count here fails parity, whichever side it is on."""

    nan: int = 0
    inf: int = 0

    @staticmethod
    def of(x: np.ndarray | Iterable[np.ndarray]) -> NonFinite:
        import numpy as np
        nan = inf = 0
        for chunk in _chunks(x):
            nan += int(np.count_nonzero(np.isnan(chunk)))
            inf += int(np.count_nonzero(np.isinf(chunk)))
        return NonFinite(nan=nan, inf=inf)

    def __bool__(self) -> bool:
        return bool(self.nan or self.inf)

    def __add__(self, other: NonFinite) -> NonFinite:
        return NonFinite(self.nan + other.nan, self.inf + other.inf)

    def __str__(self) -> str:
        parts = [f"{n} {kind}" for n, kind in ((self.nan, "NaN"), (self.inf, "Inf")) if n]
        return " and ".join(parts) or "no NaN/Inf"

    def to_json(self) -> dict:
        return {"nan": self.nan, "inf": self.inf}


@dataclass(frozen=True)
class ErrorHistogram:
    """How |artifact - reference| is spread over every element of one output: a pooled metric
    cannot tell one wild element from error everywhere, the histogram can. Bin `k` holds errors in
    [10^(k/4), 10^((k+1)/4)); exact matches are counted apart (log 0 has no bin)."""

    exact: int = 0
    bins: tuple[tuple[int, int], ...] = ()  # (k, count), sorted by k, counts > 0

    def __add__(self, other: ErrorHistogram) -> ErrorHistogram:
        merged = dict(self.bins)
        for k, n in other.bins:
            merged[k] = merged.get(k, 0) + n
        return ErrorHistogram(self.exact + other.exact, tuple(sorted(merged.items())))

    @staticmethod
    def of(abs_error: np.ndarray) -> ErrorHistogram:
        import numpy as np
        nonzero = abs_error[abs_error > 0]
        k, counts = np.unique(np.floor(np.log10(nonzero) * BINS_PER_DECADE).astype(np.int64), return_counts=True)
        return ErrorHistogram(int(abs_error.size - nonzero.size),
                              tuple((int(a), int(b)) for a, b in zip(k, counts, strict=True)))

    def to_json(self) -> dict:
        """Each bin as [log10 of its lower edge, count]."""
        return {"exact": self.exact, "log10_bin_width": 1 / BINS_PER_DECADE,
                "bins": [[k / BINS_PER_DECADE, n] for k, n in self.bins]}


@dataclass(frozen=True)
class Metrics:
    """How far `actual` is from `reference`, over every sample of one output.

    With any NaN/Inf on either side the distances are undefined (NaN, `null` in JSON); the counts
    say where the non-finite values came from: `nonfinite` in `actual`, `reference_nonfinite` in
    the reference (the source, for a parity verdict)."""

    max_abs: float
    mean_abs: float
    rel_l2: float
    cosine: float
    snr_db: float
    nonfinite: NonFinite = NonFinite()
    reference_nonfinite: NonFinite = NonFinite()
    worst: Worst | None = None  # the sample furthest from its reference (None with one sample)
    agreement: TopK | None = None  # for outputs that look like class scores
    histogram: ErrorHistogram | None = None  # None when NaN/Inf make the distances undefined

    def to_json(self, *, histogram: bool = False) -> dict:
        """Rounded to what each figure means (the verdict is taken on the unrounded values):
        distances to 4 significant digits, SNR to 0.01 dB, cosine to 4 significant digits of its
        distance from 1 (0.99988209 -> 0.9998821; fp32 noise of 1e-14 reads 1.0)."""
        out = {"max_abs": _significant(self.max_abs), "mean_abs": _significant(self.mean_abs),
               "rel_l2": _significant(self.rel_l2), "cosine": _cosine(self.cosine),
               "snr_db": round(self.snr_db, 2) if math.isfinite(self.snr_db) else None,
               "nonfinite": self.nonfinite.to_json(), "reference_nonfinite": self.reference_nonfinite.to_json()}
        if self.worst is not None:
            out["worst_sample"] = self.worst.to_json()
        if self.agreement is not None:
            out["top_k"] = self.agreement.to_json()
        if histogram:
            out["abs_error_histogram"] = self.histogram.to_json() if self.histogram is not None else None
        return out


@dataclass(frozen=True)
class Worst:
    """Pooled metrics can hide one bad sample among many good ones: the worst sample's own figures."""

    sample: int
    rel_l2: float
    snr_db: float

    def to_json(self) -> dict:
        return {"sample": self.sample, "rel_l2": _significant(self.rel_l2),
                "snr_db": round(self.snr_db, 2) if math.isfinite(self.snr_db) else None}


@dataclass(frozen=True)
class TopK:
    """For class scores (a float output [..., C] with C >= MIN_CLASSES): over every row, how often the
    artifact's top class is the reference's (`top1`), and how often the reference's top class is
    among the artifact's five highest (`top5`)."""

    rows: int
    top1: float
    top5: float

    def to_json(self) -> dict:
        return {"rows": self.rows, "top1": round(self.top1, 6), "top5": round(self.top5, 6)}


MIN_CLASSES = 10
MAX_SCORE_ELEMENTS = 1 << 24  # per sample; larger outputs are feature maps, not class scores


def _looks_like_scores(a: np.ndarray) -> bool:
    """A 1-D or 2-D float output (or [N, 1, ..., C]) whose last axis holds the classes."""
    if a.dtype.kind != "f" or a.ndim == 0 or a.size > MAX_SCORE_ELEMENTS or a.shape[-1] < MIN_CLASSES:
        return False
    return sum(d > 1 for d in a.shape[:-1]) <= 1


def _significant(x: float, digits: int = 4) -> float | None:
    return float(f"{x:.{digits}g}") if math.isfinite(x) else None


def _cosine(c: float) -> float | None:
    if not math.isfinite(c):
        return None
    gap = abs(1.0 - c)
    decimals = 10 if gap == 0 else min(10, max(4, 3 - math.floor(math.log10(gap))))
    return round(c, decimals) + 0.0  # + 0.0: no -0.0


CHUNK = 1 << 22  # elements compared at a time: float64 temporaries stay at a few tens of MB


def metrics(actual: np.ndarray | Iterable[np.ndarray], reference: np.ndarray | Iterable[np.ndarray], *,
            histogram: bool = True) -> Metrics:
    """Metrics of `actual` against `reference`: one array each, or the samples of one output in
    order (arrays or memory-mapped files), compared pairwise and in chunks so memory stays bounded
    whatever the outputs weigh. `histogram=False` skips the error histogram (its sort is most of
    the cost; per-layer localisation compares thousands of tensors and reports no histogram)."""
    sums = _Sums(with_histogram=histogram)
    per_sample: list[Metrics] = []
    rows = top1 = top5 = 0
    scores = True
    for i, (a, b) in enumerate(zip_longest(_samples(actual), _samples(reference))):
        if a is None or b is None:
            raise ValueError(f"sample count mismatch: {'the artifact' if a is None else 'the reference'} "
                             f"stops after {i} samples")
        if a.shape != b.shape and not (a.size == b.size == 1):  # a scalar held as [1] (TFLite has no rank 0)
            raise ValueError(f"shape mismatch: {a.shape} vs {b.shape}")
        a, b = (a.reshape(b.shape), b) if a.shape != b.shape else (a, b)
        one = _Sums(with_histogram=histogram)
        for ca, cb in zip(_chunks(a), _chunks(b), strict=True):
            one.add(ca, cb)
        sums.merge(one)
        per_sample.append(one.metrics())
        scores = scores and _looks_like_scores(b)
        if scores:
            r, t1, t5 = _agreement(a, b)
            rows, top1, top5 = rows + r, top1 + t1, top5 + t5
    pooled = sums.metrics()
    worst = None
    if len(per_sample) > 1 and not (pooled.nonfinite or pooled.reference_nonfinite):
        i = max(range(len(per_sample)), key=lambda k: (per_sample[k].rel_l2, -per_sample[k].snr_db))
        worst = Worst(i, per_sample[i].rel_l2, per_sample[i].snr_db)
    agreement = TopK(rows, top1 / rows, top5 / rows) if scores and rows else None
    return replace(pooled, worst=worst, agreement=agreement)


def _agreement(a: np.ndarray, b: np.ndarray) -> tuple[int, int, int]:
    """(rows, rows whose top class agrees, rows whose reference top class is in the artifact's top 5)."""
    import numpy as np
    a = np.asarray(a).reshape(-1, a.shape[-1])
    b = np.asarray(b).reshape(-1, b.shape[-1])
    ok = np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1)
    ref = b.argmax(axis=1)
    k = min(5, a.shape[1])
    top = np.argpartition(-a, k - 1, axis=1)[:, :k]
    t1 = int(np.count_nonzero((a.argmax(axis=1) == ref) & ok))
    t5 = int(np.count_nonzero((top == ref[:, None]).any(axis=1) & ok))
    return a.shape[0], t1, t5


@dataclass
class _Sums:
    """What every metric needs, accumulated chunk by chunk in float64."""

    err: float = 0.0
    ref: float = 0.0
    act: float = 0.0
    dot: float = 0.0
    max_abs: float = 0.0
    sum_abs: float = 0.0
    size: int = 0
    bad_a: NonFinite = NonFinite()
    bad_b: NonFinite = NonFinite()
    histogram: ErrorHistogram = ErrorHistogram()
    with_histogram: bool = True

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        import numpy as np
        self.size += a.size
        bad_a, bad_b = NonFinite.of(a), NonFinite.of(b)
        self.bad_a, self.bad_b = self.bad_a + bad_a, self.bad_b + bad_b
        if bad_a or bad_b or self.bad_a or self.bad_b or a.size == 0:
            return
        diff = a - b
        self.err += float(np.dot(diff, diff))
        self.ref += float(np.dot(b, b))
        self.act += float(np.dot(a, a))
        self.dot += float(np.dot(a, b))
        np.abs(diff, out=diff)
        self.max_abs = max(self.max_abs, float(diff.max()))
        self.sum_abs += float(diff.sum())
        if self.with_histogram:
            self.histogram += ErrorHistogram.of(diff)

    def merge(self, other: _Sums) -> None:
        for f in ("err", "ref", "act", "dot", "sum_abs", "size", "bad_a", "bad_b", "histogram"):
            setattr(self, f, getattr(self, f) + getattr(other, f))
        self.max_abs = max(self.max_abs, other.max_abs)

    def metrics(self) -> Metrics:
        if self.bad_a or self.bad_b or self.size == 0:
            nan = float("nan")
            return Metrics(nan, nan, nan, nan, nan, nonfinite=self.bad_a, reference_nonfinite=self.bad_b)
        err, ref, act = self.err, self.ref, self.act
        rel_l2 = (0.0 if err == 0.0 else math.inf) if ref == 0.0 else math.sqrt(err / ref)
        if ref == 0.0 and act == 0.0:
            cosine = 1.0
        elif ref == 0.0 or act == 0.0:
            cosine = 0.0
        else:
            cosine = self.dot / math.sqrt(ref * act)
        if err == 0.0:
            snr = SNR_CAP_DB
        elif ref == 0.0:
            snr = -SNR_CAP_DB
        else:
            snr = min(SNR_CAP_DB, 10.0 * math.log10(ref / err))
        return Metrics(max_abs=self.max_abs, mean_abs=self.sum_abs / self.size, rel_l2=rel_l2, cosine=cosine,
                       snr_db=snr, histogram=self.histogram if self.with_histogram else None)


def _samples(x: np.ndarray | Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    import numpy as np
    if isinstance(x, np.ndarray):
        yield x
    else:
        yield from (np.asarray(p) for p in x)


def _chunks(x: np.ndarray | Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Flat float64 pieces of at most CHUNK elements."""
    import numpy as np
    for sample in _samples(x):
        flat = sample.reshape(-1)
        for start in range(0, max(flat.size, 1), CHUNK):
            yield flat[start:start + CHUNK].astype(np.float64)


def failures(m: Metrics, t: Thresholds) -> list[str]:
    """Why `m` does not meet `t` (empty when it passes). NaN/Inf on either side always fails: a
    source that yields NaN vouches for nothing, so an artifact yielding the same NaN fails too."""
    why = []
    if m.reference_nonfinite:
        why.append(f"the source has {m.reference_nonfinite}")
    if m.nonfinite:
        why.append(f"the artifact has {m.nonfinite}")
    if why:
        return why
    if t.rel_l2_max is not None and not m.rel_l2 <= t.rel_l2_max:
        why.append(f"rel_l2 {m.rel_l2:.3g} > {t.rel_l2_max:g}")
    if t.snr_db_min is not None and not m.snr_db >= t.snr_db_min:
        why.append(f"snr_db {m.snr_db:.1f} < {t.snr_db_min:g}")
    if t.cosine_min is not None and not m.cosine >= t.cosine_min:
        why.append(f"cosine {m.cosine:.5f} < {t.cosine_min:g}")
    return why


@dataclass(frozen=True)
class Comparison:
    """One artifact's outputs against a reference: metrics per output and the verdict."""

    outputs: dict[str, Metrics]
    thresholds: dict[str, Thresholds]
    reasons: dict[str, list[str]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.outputs) and not any(self.reasons.values())

    def __bool__(self) -> bool:
        return self.passed

    def reason(self) -> str:
        return "; ".join(f"{name}: {', '.join(why)}" for name, why in self.reasons.items() if why)


def compare(actual: Mapping[str, Sequence[np.ndarray]], reference: Mapping[str, Sequence[np.ndarray]],
            thresholds: Mapping[str, Thresholds]) -> Comparison:
    """Compare every reference output; a missing one fails."""
    outs: dict[str, Metrics] = {}
    reasons: dict[str, list[str]] = {}
    for name, ref in reference.items():
        t = thresholds[name]
        if name not in actual:
            reasons[name] = ["output missing from the artifact"]
            continue
        try:
            m = metrics(actual[name], ref)
        except KeyError:
            reasons[name] = ["output missing from the artifact"]
            continue
        except ValueError as e:
            reasons[name] = [str(e)]
            continue
        outs[name] = m
        reasons[name] = failures(m, t)
    return Comparison(outputs=outs, thresholds=dict(thresholds), reasons=reasons)
