"""Per-layer metrics of an aligned artifact, the first divergent layer, and the fused groups.

A *layer* is a hub tensor the artifact holds (its last artifact tensor mapped there: a lowering's
intermediates and layout copies come before it) together with the hub nodes that compute it from
the layer's inputs (the hub tensors its artifact op reads, through the artifact's own unmapped
tensors). When the artifact fused nodes (Conv + bias + Relu6 in one TFLite op), that group has
several nodes, and the layer is named by its convolution or matrix product, else its last node that
computes (not a reshape or cast).

**The first divergent layer** is the earliest (in the hub's order) whose tensor fails the mode's
thresholds while every input it reads passes: error introduced there, not inherited. Float error
can hover at the threshold, so among such onsets the first one whose failure reaches a failing
graph output through failing layers wins; if none reaches one, the earliest onset. Each layer also
reports `jump_db`, its inputs' worst SNR minus its own: the error it added. In quantized modes the
cumulative profile crosses the threshold late (error accumulates), and a layer's own SNR can hide
what it costs (an int8 tensor whose range one outlier channel sets keeps its energy and loses every
other channel), so the isolated profile feeds each layer the hub's values of its inputs and carries
its output on through the float hub to the graph outputs: `isolated_worst` is the layer whose own
error costs the outputs most (qdq_loss_debug's per-layer comparison, taken to the outputs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from bridge.base.modes import Thresholds
from bridge.validators.compare import Metrics, failures, metrics
from bridge.validators.localisation.align import Aligner, Hub, Match, comparable
from bridge.validators.localisation.graph import TracedGraph

# The convolution or matrix product of a fused group is the layer a user knows by name.
MAIN_OPS = frozenset({"Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "Gemm", "MatMul", "MatMulInteger",
                      "QLinearMatMul", "Einsum", "Attention", "LSTM", "GRU", "RNN"})
MAX_GROUP = 64  # nodes listed per group
MAX_LAYERS = 2000  # layers listed in the report
INHERITED_DB = 0.5  # output SNRs this close are the same loss, inherited through an integer tensor


@dataclass
class Layer:
    hub: str
    match: Match
    inputs: list[str]  # hub tensors it reads
    nodes: list[int]  # hub op indices, in order
    art_op: str | None = None  # the artifact op that computed it (the last one, copies aside)
    metrics: Metrics | None = None
    reasons: list[str] = field(default_factory=list)
    isolated: Metrics | None = None  # its own tensor, computed from the hub's values of its inputs
    propagated: Metrics | None = None  # that tensor carried to the outputs by the hub (the worst output)

    @property
    def passed(self) -> bool:
        return self.metrics is not None and not self.reasons


def align_layers(hub: Hub, art: TracedGraph, first: Mapping[str, np.ndarray], declared: Mapping,
                 thresholds: Thresholds, hub_column: Callable[[str], Iterable[np.ndarray]],
                 art_column: Callable[[str], Iterable[np.ndarray]]) -> tuple[dict[str, Match], list[Layer]]:
    """Pass 1 of the aligner, its layers judged over every sample, then the frontier (pass 2)
    from the layers that passed; the layers again with the frontier's."""
    aligner = Aligner(hub, art, first, declared, thresholds)
    layers = layers_of(hub, art, aligner.run())
    measure(layers, hub_column, art_column, thresholds)
    if aligner.frontier({layer.hub for layer in layers if layer.passed}):
        measured = {(layer.hub, layer.match.artifact): layer for layer in layers}
        layers = layers_of(hub, art, aligner.matches)
        for layer in layers:
            known = measured.get((layer.hub, layer.match.artifact))
            if known is not None:
                layer.metrics, layer.reasons = known.metrics, known.reasons
        measure([layer for layer in layers if layer.metrics is None], hub_column, art_column, thresholds)
    return aligner.matches, layers


def layers_of(hub: Hub, art: TracedGraph, matches: Mapping[str, Match]) -> list[Layer]:
    """One layer per hub tensor the artifact holds (graph inputs aside), in the hub's order."""
    order = {t: i for i, op in enumerate(art.ops) for t in op.outputs}
    rep: dict[str, Match] = {}
    for m in matches.values():
        if m.hub in hub.graph.inputs.values() or m.hub not in hub.producer:
            continue
        if m.hub not in rep or order.get(m.artifact, -1) > order.get(rep[m.hub].artifact, -1):
            rep[m.hub] = m
    producer = {t: op for op in art.ops for t in op.outputs}
    computed: dict[str, str] = {}  # hub tensor -> the last artifact op that computed it (not a copy)
    for t, m in sorted(matches.items(), key=lambda tm: order.get(tm[0], -1)):
        if t in producer and not producer[t].copies:
            computed[m.hub] = producer[t].op_type
    out = []
    for h, m in sorted(rep.items(), key=lambda hm: hub.order(hm[0])):
        inputs = _inputs(m, matches, producer)
        out.append(Layer(h, m, sorted(inputs, key=hub.order), _group(hub, h, inputs),
                         art_op=computed.get(h, m.op_type)))
    return out


def _inputs(m: Match, matches: Mapping[str, Match], producer: Mapping) -> set[str]:
    """The hub tensors the artifact op behind `m` reads: walk back through the artifact's own
    tensors (unmapped, or holding the same hub tensor) to mapped ones."""
    found: set[str] = set()
    seen: set[str] = set()
    stack = list(producer[m.artifact].inputs) if m.artifact in producer else []
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        held = matches.get(t)
        if held is not None and held.hub != m.hub:
            found.add(held.hub)
        elif t in producer:
            stack.extend(producer[t].inputs)
    return found


def _group(hub: Hub, h: str, inputs: set[str]) -> list[int]:
    """Hub nodes between the inputs and `h`: upstream of `h`, downstream of an input."""
    if h not in hub.producer:
        return []
    downstream: set[str] = set()
    for i in inputs:
        downstream.update(hub.reach(i))
    nodes: set[int] = set()
    stack = [hub.producer[h]]
    while stack:
        n = stack.pop()
        if n in nodes:
            continue
        nodes.add(n)
        for t in hub.graph.ops[n].inputs:
            if t in inputs or t not in hub.producer or t not in hub.dynamic:
                continue
            if not inputs or t in downstream:
                stack.append(hub.producer[t])
    return sorted(nodes)


def measure(layers: list[Layer], hub_column: Callable[[str], Iterable[np.ndarray]],
            art_column: Callable[[str], Iterable[np.ndarray]], thresholds: Thresholds) -> None:
    """Every layer's metrics over all samples (the artifact's tensor laid out as the hub's)."""
    for layer in layers:
        try:
            layer.metrics = compare_layer(layer.match.view, art_column(layer.match.artifact), hub_column(layer.hub))
        except ValueError as e:  # a layout that does not fit another sample's shape: not comparable
            layer.reasons = [str(e)]
            continue
        layer.reasons = failures(layer.metrics, thresholds)


def as_hub(view, artifact: Iterable[np.ndarray], hub: Iterable[np.ndarray]) -> Iterable[np.ndarray]:
    """The artifact's samples laid out as the hub's, each sample to the hub's shape for it (a
    dynamic axis can change size between samples; memory-mapped samples give their shape unread)."""
    for a, h in zip(artifact, hub, strict=True):
        yield view.to_hub(a, np.shape(h))


def compare_layer(view, artifact: Iterable[np.ndarray], hub: Iterable[np.ndarray]) -> Metrics:
    """`compare.metrics` of the artifact's tensor against the hub's over every sample, where both
    agree on their NaN/Inf (`align.comparable`)."""
    hub = list(hub)
    return metrics(*comparable(as_hub(view, artifact, hub), hub), histogram=False)


def first_divergent(layers: list[Layer], outputs: set[str]) -> Layer | None:
    by_hub = {layer.hub: layer for layer in layers}

    def passes(h: str) -> bool:
        return h not in by_hub or by_hub[h].passed  # graph inputs (and unheld tensors) are exact

    failing = [layer for layer in layers if layer.metrics is not None and not layer.passed]
    onsets = [layer for layer in failing if all(passes(i) for i in layer.inputs)]
    if not onsets:
        return max(failing, key=lambda layer: _loss(layer, by_hub), default=None)
    readers: dict[str, list[Layer]] = {}
    for layer in failing:
        for i in layer.inputs:
            readers.setdefault(i, []).append(layer)
    for onset in onsets:
        stack, seen = [onset], set()
        while stack:
            layer = stack.pop()
            if layer.hub in outputs:
                return onset
            if layer.hub not in seen:
                seen.add(layer.hub)
                stack.extend(readers.get(layer.hub, ()))
    return onsets[0]


def input_snr(layer: Layer, by_hub: Mapping[str, Layer]) -> float:
    """The worst SNR among the layer's inputs; NaN when it reads only the graph's inputs (exact) or
    an input is not finite."""
    snrs = [by_hub[i].metrics.snr_db for i in layer.inputs if i in by_hub and by_hub[i].metrics is not None]
    if not snrs or not all(np.isfinite(s) for s in snrs):
        return float("nan")
    return min(snrs)


def jump_db(layer: Layer, by_hub: Mapping[str, Layer]) -> float:
    """The SNR the layer loses against its inputs' worst (NaN where either is unknown)."""
    if layer.metrics is None:
        return float("nan")
    return input_snr(layer, by_hub) - layer.metrics.snr_db


def _loss(layer: Layer, by_hub: Mapping[str, Layer]) -> float:
    jump = jump_db(layer, by_hub)
    if np.isfinite(jump):
        return jump
    return -layer.metrics.snr_db if layer.metrics is not None and np.isfinite(layer.metrics.snr_db) else float("inf")


def isolated_worst(layers: list[Layer]) -> Layer | None:
    """The layer whose own error costs the outputs most (its isolated tensor carried on through
    the float hub); where that was not measured, or no layer's own error reaches the outputs at all
    (a saturating gate after it: the outputs come out bit-identical), the one whose own tensor is
    furthest off, rather than the earliest of equally harmless layers."""
    carried = [layer for layer in layers if layer.propagated is not None]
    if any(layer.propagated.rel_l2 > 0 for layer in carried):
        worst = min(_snr_key(layer.propagated) for layer in carried)
        # A reader of an integer tensor is fed the hub's value in that tensor's encoding, so it inherits
        # its producer's rounding: of the layers costing the outputs about as much, the earliest.
        return next(layer for layer in carried if _snr_key(layer.propagated) <= worst + INHERITED_DB)
    measured = [layer for layer in layers if layer.isolated is not None]
    return min(measured, key=lambda layer: _snr_key(layer.isolated), default=None)


def _snr_key(m: Metrics) -> float:
    return m.snr_db if np.isfinite(m.snr_db) else float("-inf")
