"""Which hub tensor each artifact tensor holds.

Converters rename, fuse and re-lay tensors, so names alone rarely map an artifact back to the hub:
onnx2tf 1.x names TFLite tensors after TensorFlow ops (`tf.nn.convolution_3`), fused ops carry one
tensor for several ONNX nodes (Conv + bias + Relu6), layouts change (NCHW -> NHWC) and converters
insert their own ops (explicit PAD before a CONV_2D). The aligner walks the artifact's ops in
execution order and maps each computed tensor to a hub tensor:

1. **Declared**: the interface (inputs and outputs, through the artifact's bindings) and names the
   converter reported (onnx2tf 2.x's correspondence report, our Core ML op names, ONNX names).
2. **Copies**: an op that only moves values (transpose, reshape, quantize...) holds its input's tensor.
3. **Values**: among the hub tensors downstream of its inputs' (the window), with a shape that fits
   up to a permutation (NHWC vs NCHW) or dropped unit axes, the one its values match within the
   mode's thresholds on the first sample; of equal matches the earliest, then on along readers that
   hold the same values (a fused Conv+Relu6 holds the Relu6's output, which equals the Conv's where
   nothing was clipped), never across a node that changes them.
4. **Structure**: a tensor that matches nothing (it diverges, or it is a lowering's own
   intermediate) goes to the nearest hub tensor downstream of its inputs that fits its shape, one
   not already held preferred, then along single-consumer same-shape chains (bias, activation) while
   its values get closer.
Tensors that fit nothing (a PAD's padded copy) stay unmapped: they are the artifact's own.

After the first divergence, rule 4 places tensors by structure alone, so the layers listed after it
may sit one node off; the first divergent layer itself always has matched inputs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from bridge.base.modes import Thresholds
from bridge.validators.compare import Metrics, failures, metrics
from bridge.validators.localisation.graph import TracedGraph

MAX_DEPTH = 256  # hub nodes searched downstream of a tensor's inputs
FULL_CHECKS = 12  # candidates whose values are compared in full (the rest are ranked by summary stats)
TIE = 1.1  # matches within this factor of the best rel_l2 are equally good


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
            depth = {source: 0}
            frontier = [source]
            while frontier:
                nxt = []
                for t in frontier:
                    if depth[t] >= MAX_DEPTH:
                        continue
                    for i in self.consumers.get(t, ()):
                        for out in self.graph.ops[i].outputs:
                            if out not in depth:
                                depth[out] = depth[t] + 1
                                nxt.append(out)
                frontier = nxt
            self._reach[source] = depth
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
        self._held: set[str] = set()
        self._producer = {t: op for op in artifact.ops for t in op.outputs}
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
        fits = [(h, vs) for h, vs in ((h, views(self._shape(t), self._hub_shape(h))) for h in window) if vs]
        best = self._by_value(t, fits)
        if best is not None:
            self._add(Match(t, best.hub, best.view, "value", op.name, op.op_type))
            return
        placed = self._by_structure(t, [(h, vs) for h, vs in fits if window[h] > 0], window)
        if placed is not None:
            h, view = placed
            self._add(Match(t, h, view, "structure", op.name, op.op_type))

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

    def _by_structure(self, t: str, fits: list[tuple[str, list[View]]], window: dict[str, int]):
        """The nearest fitting hub tensor downstream of the inputs (not one already held, if any),
        then on along a chain of single-consumer same-shape nodes while the values get closer."""
        if not fits:
            return None
        nearest = min(window[h] for h, _ in fits)
        ring = [(h, vs) for h, vs in fits if window[h] == nearest]
        free = [(h, vs) for h, vs in ring if h not in self._held] or ring
        scored = [(h, self._view_for(t, h, vs)) for h, vs in free]
        h, view = max(scored, key=lambda hv: (self._compare(t, hv[0], hv[1]).cosine, -self.hub.order(hv[0])))
        cosine = self._compare(t, h, view).cosine
        while True:
            nxt = self._chain_next(h)
            if nxt is None:
                break
            vs = views(self._shape(t), self._hub_shape(nxt))
            if not vs:
                break
            v = self._view_for(t, nxt, vs)
            c = self._compare(t, nxt, v).cosine
            if not c >= cosine - 1e-6:
                break
            h, view, cosine = nxt, v, c
        return h, view

    def _chain_next(self, h: str) -> str | None:
        """The output of `h`'s only reader, if that node reads nothing else computed and keeps the shape."""
        readers = self.hub.consumers.get(h, [])
        if len(readers) != 1:
            return None
        op = self.hub.graph.ops[readers[0]]
        computed = [i for i in op.inputs if i in self.hub.dynamic]
        outs = [o for o in op.outputs if o in self.hub.values]
        if set(computed) != {h} or len(outs) != 1 or self._hub_shape(outs[0]) != self._hub_shape(h):
            return None
        return outs[0]

    def _view_for(self, t: str, h: str, vs: list[View]) -> View:
        """For a tensor that matches nothing: the layout the matched tensors of its rank use most,
        else the one its values fit best."""
        if len(vs) == 1:
            return vs[0]
        votes = self._perm_votes.get(len(self._shape(t)), {})
        voted = [v for v in vs if votes.get(v.perm)]
        if voted:
            return max(voted, key=lambda v: votes[v.perm])
        return max(vs, key=lambda v: self._compare(t, h, v).cosine)

    # -- bookkeeping -------------------------------------------------------------------------
    def _add(self, m: Match) -> None:
        self.matches[m.artifact] = m
        self._held.add(m.hub)
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
            x = x[np.isfinite(x)]
            self._stats[key] = (float(x.mean()), float(x.std()), float(np.abs(x).max())) if x.size else (0.0,) * 3
        return self._stats[key]

    def _compare(self, t: str, h: str, view: View) -> Metrics:
        key = (t, h, view)
        if key not in self._compared:
            self._compared[key] = metrics(view.to_hub(self.values[t]), np.asarray(self.hub.values[h]))
        return self._compared[key]


def _distance(a: tuple, b: tuple) -> float:
    scale = max(b[1], abs(b[0]), 1e-12)
    return sum(abs(x - y) for x, y in zip(a, b, strict=True)) / scale
