"""Which hub tensor each artifact tensor holds.

Converters rename, fuse, decompose and re-lay tensors, so names alone rarely map an artifact back
to the hub: onnx2tf 1.x names TFLite tensors after TensorFlow ops (`tf.nn.convolution_3`), fused
ops carry one tensor for several ONNX nodes (Conv + bias + Relu6), decomposed ones several tensors
for one node (a LayerNormalization as MEAN, SQUARED_DIFFERENCE, RSQRT, MUL, ADD), layouts change
(NCHW -> NHWC) and converters insert their own ops (an explicit PAD before a CONV_2D).

**Pass 1** walks the artifact's ops in execution order and maps a computed tensor only on evidence:
1. **Declared**: the interface (inputs and outputs, through the artifact's bindings) and names the
   converter reported (onnx2tf 2.x's correspondence report, our Core ML op names, ONNX names).
2. **Copies**: an op that only moves values (transpose, reshape, quantize...) holds its input's tensor.
3. **Values**: among the hub tensors downstream of those its inputs hold (the window; tensors the
   artifact computes on its own are looked through), with a shape that fits up to a permutation
   (NHWC vs NCHW) or dropped unit axes, the one its values match within the mode's thresholds on
   the first sample; of equal matches the earliest, then on along readers that hold the same
   values (a fused Conv+Relu6 holds the Relu6's output, which equals the Conv's where nothing was
   clipped), never across a node that changes them.
Everything else stays unmapped: a lowering's intermediates, a PAD's padded copy, and whatever
diverges. Nothing unmapped ever narrows a later window, so one odd tensor cannot shift the rest.

**Pass 2, the frontier** (`frontier`, once pass 1's layers are judged over every sample): a hub
tensor whose inputs are all reproduced within the thresholds (or are graph inputs, or are only
fused away: some reproduced tensor depends on them, or only re-laid: a transpose of such a tensor)
but that nothing reproduces, and on which no reproduced tensor depends, is where the artifact
leaves the hub. Its name comes from the hub's
structure alone. For its figures, the artifact tensor computed from the holders of its inputs
(at most a few ops on) that fits its shape: the nearest one whose values still correlate with it
(0.9), else the nearest; then on along single-reader same-shape hub nodes a converter folds
(bias, batch norm, activation) while that tensor's values get closer, which names a fused group.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from bridge.base.modes import Thresholds
from bridge.validators.compare import Metrics, failures, metrics
from bridge.validators.localisation.graph import FUSIBLE_OPS, TracedGraph

MAX_DEPTH = 256  # hub nodes searched downstream of a tensor's inputs
FULL_CHECKS = 12  # candidates whose values are compared in full (the rest are ranked by summary stats)
TIE = 1.1  # matches within this factor of the best rel_l2 are equally good
FRONTIER_DEPTH = 12  # artifact ops searched on from a divergent layer's inputs
CORRELATED = 0.9  # centered cosine above which a divergent tensor still resembles its hub tensor


@dataclass(frozen=True)
class View:
    """How an artifact tensor of shape `artifact` is laid out as a hub tensor of shape `hub`: on
    the same rank a transpose by `perm`; else drop unit axes, transpose, reshape to the hub's shape.
    Shapes are those of the first sample; other samples (a dynamic axis at another size) give their
    own shapes."""

    artifact: tuple[int, ...]
    hub: tuple[int, ...]
    middle: tuple[int, ...]  # the artifact's shape, without its unit axes when the ranks differ
    perm: tuple[int, ...] | None = None

    @property
    def same_rank(self) -> bool:
        return len(self.artifact) == len(self.hub)

    def to_hub(self, a: np.ndarray, shape: tuple[int, ...] | None = None) -> np.ndarray:
        a = np.asarray(a)
        if self.same_rank:
            return np.ascontiguousarray(a.transpose(self.perm)) if self.perm else a
        if len(self.middle) != len(self.artifact):
            a = a.reshape(tuple(d for d in a.shape if d != 1) or (1,)) if a.ndim else a
        if self.perm and a.ndim == len(self.perm):
            a = a.transpose(self.perm)
        return np.ascontiguousarray(a).reshape(shape or self.hub)

    def to_artifact(self, h: np.ndarray, shape: tuple[int, ...] | None = None) -> np.ndarray:
        h = np.asarray(h)
        if self.same_rank:
            return np.ascontiguousarray(h.transpose(np.argsort(self.perm))) if self.perm else h
        if self.perm:
            h = h.reshape(tuple(d for d in h.shape if d != 1) or (1,))
            h = h.transpose(np.argsort(self.perm)) if h.ndim == len(self.perm) else h
        return np.ascontiguousarray(h).reshape(shape or self.artifact)

    def to_json(self) -> list[int] | None:
        return list(self.perm) if self.perm else None


def views(artifact: tuple[int, ...], hub: tuple[int, ...]) -> list[View]:
    """Every layout of `artifact` that reads as `hub`: the identity and the channel moves first."""
    if math.prod(artifact) != math.prod(hub):
        return []
    src, dst = artifact, hub
    if len(src) != len(dst):
        src, dst = tuple(d for d in artifact if d != 1), tuple(d for d in hub if d != 1)
        if len(src) != len(dst):
            return [View(artifact, hub, artifact)] if len(artifact) <= 2 or len(hub) <= 2 else []
    rank = len(src)
    standard = [tuple(range(rank))]
    if rank >= 3:
        standard += [(0, rank - 1, *range(1, rank - 1)), (0, *range(2, rank), 1)]
    fitting = [p for p in dict.fromkeys(standard) if all(src[p[i]] == dst[i] for i in range(rank))]
    if not fitting and rank <= 5:
        fitting = [p for p in itertools.permutations(range(rank)) if all(src[p[i]] == dst[i] for i in range(rank))][:24]
    return [View(artifact, hub, src, None if p == tuple(range(rank)) else p) for p in fitting]


@dataclass(frozen=True)
class Match:
    artifact: str  # artifact tensor id
    hub: str  # hub tensor id
    view: View
    how: str  # interface | name | copy | value | structure
    op: str | None  # the artifact op that computed it (None for inputs)
    op_type: str | None


@dataclass
class Hub:
    """The hub's graph with its tensors' first-sample values, and what the aligner asks of it."""

    graph: TracedGraph
    values: Mapping[str, np.ndarray]
    producer: dict[str, int] = field(default_factory=dict)
    consumers: dict[str, list[int]] = field(default_factory=dict)
    dynamic: set[str] = field(default_factory=set)  # tensors computed from the graph's inputs
    _reach: dict[str, dict[str, int]] = field(default_factory=dict)

    def __post_init__(self):
        for i, op in enumerate(self.graph.ops):
            for t in op.outputs:
                self.producer[t] = i
            for t in op.inputs:
                self.consumers.setdefault(t, []).append(i)
        self.dynamic = set(self.graph.inputs.values())
        for op in self.graph.ops:
            if any(i in self.dynamic for i in op.inputs):
                self.dynamic.update(op.outputs)

    def order(self, tensor: str) -> int:
        return self.producer.get(tensor, -1)

    def reach(self, source: str) -> dict[str, int]:
        """Hub tensors downstream of `source` (itself at depth 0), with their depth in nodes."""
        if source not in self._reach:
            self._reach[source] = downstream(
                {source}, lambda t: (out for i in self.consumers.get(t, ()) for out in self.graph.ops[i].outputs),
                MAX_DEPTH)
        return self._reach[source]

    def window(self, sources: set[str]) -> dict[str, int]:
        """Tensors downstream of every source, with the largest depth from any of them."""
        found: dict[str, int] | None = None
        for s in sources:
            r = self.reach(s)
            found = dict(r) if found is None else {t: max(d, r[t]) for t, d in found.items() if t in r}
        return found or {}


@dataclass(frozen=True)
class _Candidate:
    hub: str
    view: View
    metrics: Metrics
    passed: bool


class Aligner:
    def __init__(self, hub: Hub, artifact: TracedGraph, values: Mapping[str, np.ndarray],
                 declared: Mapping[str, tuple[str, str, View | None]], thresholds: Thresholds):
        """`values`: the artifact's first-sample values (float, its own layout). `declared`:
        artifact tensor -> (hub tensor, how, view or None to find one)."""
        self.hub, self.art, self.values = hub, artifact, values
        self.declared, self.thresholds = declared, thresholds
        self.matches: dict[str, Match] = {}
        self._near: dict[str, frozenset[str]] = {}
        self._producer = {t: op for op in artifact.ops for t in op.outputs}
        self._readers: dict[str, list] = {}
        for op in artifact.ops:
            for t in op.inputs:
                self._readers.setdefault(t, []).append(op)
        self._stats: dict[int, tuple] = {}
        self._compared: dict[tuple, Metrics] = {}
        self._perm_votes: dict[int, dict] = {}

    def run(self) -> dict[str, Match]:
        for tensor in self.art.inputs.values():
            if tensor in self.declared:
                self._declared(tensor, None, None)
            self._near[tensor] = self._nearest_of(tensor)
        for op in self.art.ops:
            for t in op.outputs:
                if t in self.values:
                    self._place(t, op)
                self._near[t] = self._nearest_of(t)
        return self.matches

    # -- the rules ---------------------------------------------------------------------------
    def _place(self, t: str, op) -> None:
        if t in self.declared and self._declared(t, op.name, op.op_type):
            return
        sources = self._sources(op)
        if not sources:
            return
        if op.copies:
            inputs = [i for i in op.inputs if i in self.matches]
            if len(inputs) == 1 and self._copy(t, op, self.matches[inputs[0]].hub):
                return
        window = self.hub.window(sources)
        fits = [(h, vs) for h, vs in ((h, views(self._shape(t), self._hub_shape(h))) for h in window
                                      if h in self.hub.values) if vs]
        best = self._by_value(t, fits)
        if best is not None:
            self._add(Match(t, best.hub, best.view, "value", op.name, op.op_type))

    def _declared(self, t: str, op: str | None, op_type: str | None) -> bool:
        hub, how, view = self.declared[t]
        if hub not in self.hub.values or t not in self.values:
            return False
        if view is None:
            fits = views(self._shape(t), self._hub_shape(hub))
            if not fits:
                return False
            view = min(fits, key=lambda v: self._compare(t, hub, v).rel_l2) if len(fits) > 1 else fits[0]
        self._add(Match(t, hub, view, how, op, op_type))
        return True

    def _copy(self, t: str, op, hub: str) -> bool:
        fits = views(self._shape(t), self._hub_shape(hub))
        if not fits:
            return False
        view = min(fits, key=lambda v: self._compare(t, hub, v).rel_l2) if len(fits) > 1 else fits[0]
        self._add(Match(t, hub, view, "copy", op.name, op.op_type))
        return True

    def _by_value(self, t: str, fits: list[tuple[str, list[View]]]) -> _Candidate | None:
        """The latest of the hub tensors whose values the artifact's match best, if any passes."""
        mine = self._summary(self.values[t])
        ranked = sorted(fits, key=lambda hv: _distance(mine, self._summary(self.hub.values[hv[0]])))
        found = []
        for h, vs in ranked[:FULL_CHECKS]:
            for v in vs:
                m = self._compare(t, h, v)
                found.append(_Candidate(h, v, m, not failures(m, self.thresholds)))
        passing = [c for c in found if c.passed]
        if not passing:
            return None
        best = min(c.metrics.rel_l2 for c in passing)
        equal = {c.hub: c for c in passing if c.metrics.rel_l2 <= best * TIE + 1e-7}
        # from the earliest, on through readers holding the same values (a fused Conv + Relu6 holds the
        # Relu6's output), never across a node that changes them (x -> scale -> unscale equals x too)
        h = min(equal, key=self.hub.order)
        while True:
            nxt = [o for i in self.hub.consumers.get(h, ()) for o in self.hub.graph.ops[i].outputs if o in equal]
            if not nxt:
                return equal[h]
            h = min(nxt, key=self.hub.order)

    # -- pass 2 ------------------------------------------------------------------------------
    def frontier(self, good: set[str]) -> list[Match]:
        """Where the artifact leaves the hub, given `good`: the hub tensors pass 1's layers
        reproduce within the thresholds over every sample. Returns the matches it adds."""
        hub = self.hub
        held = {m.hub for m in self.matches.values()}
        inputs = set(hub.graph.inputs.values())
        upstream = self._upstream(good)
        found = []

        memo: dict[str, bool] = {}

        def explained(t: str) -> bool:
            """Reproduced, a graph input or constant, fused away, or computed from explained
            tensors by a node never compared (indices, masks) or one that only re-lays values (an
            NCHW copy the artifact keeps NHWC)."""
            if t not in memo:
                memo[t] = False  # a cycle (none in a valid graph) explains nothing
                if t in good or t in inputs or t not in hub.dynamic:
                    memo[t] = True
                elif t not in held and t in upstream:
                    memo[t] = True
                elif t in hub.producer and (t not in hub.values or hub.graph.ops[hub.producer[t]].copies):
                    memo[t] = all(explained(i) for i in hub.graph.ops[hub.producer[t]].inputs)
            return memo[t]

        for op in hub.graph.ops:
            data = [t for t in op.inputs if t in hub.dynamic]
            if op.copies or not data or not all(explained(t) for t in data):
                continue
            for h in op.outputs:
                if h in hub.values and h in hub.dynamic and h not in held and h not in upstream:
                    m = self._frontier_match(h, data)
                    if m is not None:
                        self._add(m)
                        held.add(m.hub)
                        found.append(m)
        return found

    def _frontier_match(self, h: str, data: list[str]) -> Match | None:
        start = {t for m in self._holders_of(data) for t in [m.artifact]}
        near = self._art_reach(start)
        fits = [(t, d, views(self._shape(t), self._hub_shape(h))) for t, d in near.items()
                if d > 0 and t in self.values and t not in self.matches]
        fits = [(t, d, self._view_for(t, h, vs)) for t, d, vs in fits if vs]
        if not fits:
            return None
        scored = [(t, d, v, self._correlation(t, h, v)) for t, d, v in fits]
        alike = [c for c in scored if c[3] >= CORRELATED]
        t, _, view, score = min(alike or scored, key=lambda c: (c[1], -c[3]))
        while True:  # a fused group: on along the hub while the artifact's values get closer
            nxt = self._chain_next(h)
            vs = views(self._shape(t), self._hub_shape(nxt)) if nxt else []
            if not vs:
                break
            v = self._view_for(t, nxt, vs)
            c = self._correlation(t, nxt, v)
            if not c > score + 1e-3:
                break
            h, view, score = nxt, v, c
        op = self._producer[t]
        return Match(t, h, view, "structure", op.name, op.op_type)

    def _holders_of(self, hub_tensors: list[str]) -> list[Match]:
        """The matches holding these hub tensors or, for one the artifact does not hold (fused
        away), the nearest held tensors upstream of it."""
        by_hub: dict[str, list[Match]] = {}
        for m in self.matches.values():
            by_hub.setdefault(m.hub, []).append(m)
        found, seen, stack = [], set(), list(hub_tensors)
        while stack:
            t = stack.pop()
            if t in seen:
                continue
            seen.add(t)
            if t in by_hub:
                found += by_hub[t]
            elif t in self.hub.producer:
                stack += [i for i in self.hub.graph.ops[self.hub.producer[t]].inputs if i in self.hub.dynamic]
        return found

    def _art_reach(self, start: set[str]) -> dict[str, int]:
        """Artifact tensors computed from `start`, with their depth in ops (at most FRONTIER_DEPTH)."""
        return downstream(start, lambda t: (out for op in self._readers.get(t, ()) for out in op.outputs),
                          FRONTIER_DEPTH)

    def _upstream(self, good: set[str]) -> set[str]:
        """Hub tensors some tensor in `good` is computed from."""
        found: set[str] = set()
        stack = [t for t in good if t in self.hub.producer]
        while stack:
            t = stack.pop()
            for i in self.hub.graph.ops[self.hub.producer[t]].inputs:
                if i not in found:
                    found.add(i)
                    if i in self.hub.producer:
                        stack.append(i)
        return found

    def _correlation(self, t: str, h: str, view: View) -> float:
        """How alike the values are whatever their scale and offset: the cosine of the centered
        tensors (compare.metrics on both minus their means)."""
        [a], [b] = comparable([view.to_hub(self.values[t])], [np.asarray(self.hub.values[h])])
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        c = metrics(a - a.mean(), b - b.mean(), histogram=False).cosine
        return c if math.isfinite(c) else -1.0

    def _chain_next(self, h: str) -> str | None:
        """The output of `h`'s only reader, if that node is one converters fold into the op before
        (bias, batch norm, activation), reads nothing else computed and keeps the shape."""
        readers = self.hub.consumers.get(h, [])
        if len(readers) != 1:
            return None
        op = self.hub.graph.ops[readers[0]]
        if op.op_type not in FUSIBLE_OPS:
            return None
        computed = [i for i in op.inputs if i in self.hub.dynamic]
        outs = [o for o in op.outputs if o in self.hub.values]
        if set(computed) != {h} or len(outs) != 1 or self._hub_shape(outs[0]) != self._hub_shape(h):
            return None
        return outs[0]

    def _view_for(self, t: str, h: str, vs: list[View]) -> View:
        """For a tensor that matches nothing: the layout the matched tensors of its rank use most,
        else the one its values correlate with best."""
        if len(vs) == 1:
            return vs[0]
        votes = self._perm_votes.get(len(self._shape(t)), {})
        voted = [v for v in vs if votes.get(v.perm)]
        if voted:
            return max(voted, key=lambda v: votes[v.perm])
        return max(vs, key=lambda v: self._correlation(t, h, v))

    # -- bookkeeping -------------------------------------------------------------------------
    def _add(self, m: Match) -> None:
        self.matches[m.artifact] = m
        if m.how in ("value", "interface", "name"):
            votes = self._perm_votes.setdefault(len(m.view.artifact), {})
            votes[m.view.perm] = votes.get(m.view.perm, 0) + 1

    def _nearest_of(self, t: str) -> frozenset[str]:
        if t in self.matches:
            return frozenset({self.matches[t].hub})
        op = self._producer.get(t)
        if op is None:
            return frozenset()
        return frozenset().union(*(self._near.get(i, frozenset()) for i in op.inputs))

    def _sources(self, op) -> set[str]:
        found = set()
        for i in op.inputs:
            if i in self.matches:
                found.add(self.matches[i].hub)
            else:
                found |= self._near.get(i, frozenset())
        return found

    def _shape(self, t: str) -> tuple[int, ...]:
        return tuple(np.shape(self.values[t]))

    def _hub_shape(self, h: str) -> tuple[int, ...]:
        return tuple(np.shape(self.hub.values[h]))

    def _summary(self, a: np.ndarray) -> tuple:
        key = id(a)
        if key not in self._stats:
            x = np.asarray(a, np.float64).reshape(-1)
            bad = int(x.size - np.count_nonzero(np.isfinite(x)))
            x = x[np.isfinite(x)]
            self._stats[key] = ((float(x.mean()), float(x.std()), float(np.abs(x).max()), float(bad)) if x.size
                                else (0.0, 0.0, 0.0, float(bad)))
        return self._stats[key]

    def _compare(self, t: str, h: str, view: View) -> Metrics:
        key = (t, h, view)
        if key not in self._compared:
            a, b = comparable([view.to_hub(self.values[t])], [np.asarray(self.hub.values[h])])
            self._compared[key] = metrics(a, b, histogram=False)
        return self._compared[key]


def comparable(actual, reference) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Sample by sample, the elements to compare. Inside a graph NaN/Inf can be right: an attention
    mask holds -inf, a softmax over a fully masked row NaN. Where both sides hold the same
    non-finite values at the same places, the finite elements are compared; anywhere else NaN/Inf
    stay, and `compare.metrics` fails them as parity does."""
    out_a, out_r = [], []
    for a, r in zip(actual, reference, strict=True):
        a, r = np.asarray(a), np.asarray(r)
        if a.shape == r.shape and a.dtype.kind == "f" and r.dtype.kind == "f":
            fa, fr = np.isfinite(a), np.isfinite(r)
            if not (fa.all() and fr.all()) and np.array_equal(fa, fr) \
                    and np.array_equal(a[~fa], r[~fr], equal_nan=True):
                a, r = a[fa], r[fr]
        out_a.append(a)
        out_r.append(r)
    return out_a, out_r


def _distance(a: tuple, b: tuple) -> float:
    scale = max(b[1], abs(b[0]), 1e-12)
    return sum(abs(x - y) for x, y in zip(a, b, strict=True)) / scale


def downstream(start: set[str], outputs_of: Callable[[str], Iterable[str]], max_depth: int) -> dict[str, int]:
    """Tensors computed from `start` (each at depth 0), breadth first, with their depth in ops, at
    most `max_depth`; `outputs_of(t)` gives the outputs of the ops that read `t`."""
    depth = dict.fromkeys(start, 0)
    frontier = list(start)
    while frontier:
        nxt = []
        for t in frontier:
            if depth[t] >= max_depth:
                continue
            for out in outputs_of(t):
                if out not in depth:
                    depth[out] = depth[t] + 1
                    nxt.append(out)
        frontier = nxt
    return depth
