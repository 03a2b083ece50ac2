"""The localisation stage: runs in a child (`bridge.stages.run_stage`), with the artifact's lane's
runtime blocks, since it runs that lane's tracer; the hub's tracer is onnxruntime.

1. The hub runs on onnxruntime with every node output exposed, on the first parity samples; its
   tensors are written to disk once per run (`hub_trace`) and read by every artifact's localisation.
2. The artifact runs in its lane's tracer on the same samples (mapped to its names and layout by its
   bindings, as parity feeds it); its tensors go to disk too.
3. The aligner maps artifact tensors to hub tensors on the first sample; every layer is then
   compared over all samples with `compare.metrics` and the mode's thresholds.
4. The isolated profile: the artifact runs again with every held tensor replaced, for the ops that
   read it, by the hub's value, so each layer computes from exact inputs.
Memory stays bounded as in parity: samples live on disk, one sample's tensors in memory at a time.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bridge.base.arrays import Feed, Feeds, FeedWriter
from bridge.base.bindings import IO
from bridge.base.modes import Thresholds
from bridge.validators.localisation import reencoded
from bridge.validators.localisation.align import Hub, Match, View, comparable
from bridge.validators.localisation.graph import TracedGraph
from bridge.validators.localisation.profile import (
    MAIN_OPS,
    MAX_GROUP,
    MAX_LAYERS,
    Layer,
    align_layers,
    as_hub,
    compare_layer,
    first_divergent,
    input_snr,
    isolated_worst,
    jump_db,
)
from bridge.validators.runners import load_runner

HUB_TRACER = "bridge.validators.runners.onnxruntime:OnnxRuntimeTracer"
SAMPLES = 4  # parity samples localisation runs on (spread over them)
TRACE_BYTES = 1 << 30  # hub tensors kept on disk per run: fewer samples past this
MAX_TENSORS = 4000  # hub tensors exposed at once; more are thinned evenly (outputs kept)
MAX_CARRIED = 256  # layers whose isolated error is carried to the outputs (the worst on their own first)
CARRY_SECONDS = 30.0  # and for at most this long (`bridge debug` gives it longer)


@dataclass(frozen=True)
class LocalizeRequest:
    artifact: str
    tracer: str  # "module:Class" of the artifact's lane (`Lane.tracer`)
    hub: str  # the hub ONNX file bridge wrote for this run
    hub_trace: str  # folder of the hub's traced tensors, shared by every artifact of a run
    work: str  # this artifact's scratch folder
    feeds: Sequence[Feed]  # the parity samples, by source name and layout
    io: IO | None  # the artifact's bindings (None: its tensors are the source's)
    thresholds: Thresholds  # the artifact mode's, applied to every layer
    node_names: Mapping[str, str] = field(default_factory=dict)  # hub node name -> original
    correspondence: Mapping[str, str] = field(default_factory=dict)  # hub tensor -> artifact tensor name
    framework: str = ""
    samples: int = SAMPLES
    isolated: bool = True
    carry_seconds: float = CARRY_SECONDS
    max_carried: int = MAX_CARRIED  # a fixed count and no time bound carry the same layers every run


def localize(req: LocalizeRequest) -> dict:
    start = time.perf_counter()
    hub_tracer, hub_graph, hub_feeds, picks = _hub_trace(req)
    feeds = [req.feeds[i] for i in picks]
    tracer = load_runner(req.tracer)
    tracer.load(req.artifact)
    graph: TracedGraph = tracer.graph()
    art_feeds = _artifact_trace(tracer, graph, feeds, req.io, Path(req.work) / "artifact")
    hub = Hub(hub_graph, hub_feeds[0])
    declared = _declared(req, graph, hub_graph, art_feeds[0], hub_feeds[0])
    matches, layers = align_layers(hub, graph, art_feeds[0], declared, req.thresholds, hub_feeds.column,
                                   art_feeds.column)
    isolated_error, carried = None, 0
    if req.isolated and layers:
        try:
            isolated = _isolate(tracer, graph, feeds, req.io, layers, hub_feeds, art_feeds, Path(req.work) / "isolated")
            carried = _carry(hub_tracer, feeds, layers, isolated, hub_feeds, req.carry_seconds, req.max_carried)
        except Exception as e:  # noqa: BLE001 - a runtime refusing the rewired graph leaves the cumulative profile
            isolated_error = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]
    outputs = set(hub_graph.outputs.values())
    first = first_divergent(layers, outputs)
    report = _Report(req, hub_graph, graph, layers)
    out = {
        "status": "localized" if first is not None else "no_divergence",
        "reference": f"the hub on {HUB_RUNTIME}",
        "runtime": tracer.runtime,
        "runtime_note": tracer.note,
        "samples": len(hub_feeds),
        "sample_indices": picks,
        "thresholds": req.thresholds.to_json(),
        "rule": "first layer failing the thresholds whose inputs pass (and whose failure reaches an output)",
        "mapped": {"artifact_tensors": sum(1 for op in graph.ops for _ in op.outputs), "held": len(matches),
                   "layers": len(layers), "hub_nodes": len(hub_graph.ops)},
        "first_divergent": report.layer(first) if first is not None else None,
    }
    worst = isolated_worst(layers)
    if req.isolated:
        out["isolated"] = {
            "method": "each layer fed the hub's values of its inputs (quantized to the artifact's own input "
                      "encoding where it is integer), one run with the graph cut at every held tensor; then each "
                      "layer's output carried to the graph outputs through the float hub (output_snr_db)",
            "carried": carried,
            "carried_of": sum(1 for layer in layers if layer.isolated is not None),
            "worst": report.layer(worst) if worst is not None else None,
        }
        if isolated_error:
            out["isolated"]["error"] = isolated_error
    out["layers"] = [report.layer(layer, brief=True) for layer in layers[:MAX_LAYERS]]
    if len(layers) > MAX_LAYERS:
        out["layers_truncated"] = len(layers) - MAX_LAYERS
    out["seconds"] = round(time.perf_counter() - start, 3)
    return out


HUB_RUNTIME = "onnxruntime (graph optimizations off)"


def _hub_trace(req: LocalizeRequest):
    """The hub's tensors on the samples localisation uses (spread over the parity samples, so a
    dynamic axis's second size is among them), traced once per run, and which samples they are."""
    tracer = load_runner(HUB_TRACER)
    tracer.load(req.hub)
    if len(tracer.traced) > MAX_TENSORS:
        step = len(tracer.traced) / MAX_TENSORS
        kept = {tracer.traced[int(i * step)] for i in range(MAX_TENSORS)}
        tracer.keep_only(kept | set(tracer.graph().outputs.values()))
    folder = Path(req.hub_trace)
    if (folder / "feeds.json").exists():
        picks = json.loads((folder / PICKS).read_text())
        return tracer, tracer.graph(), Feeds.open(folder), picks
    picks = spread(len(req.feeds), req.samples)
    writer = FeedWriter(folder)
    for n, i in enumerate(picks):
        inputs = {k: np.asarray(v) for k, v in req.feeds[i].items() if k in tracer.graph().inputs}
        traced = tracer.trace(inputs)
        writer.append({**{k: _stored(v) for k, v in inputs.items()}, **traced})
        if n == 0:  # fewer samples when they would take too much disk
            per_sample = sum(np.asarray(v).nbytes for v in traced.values())
            picks = spread(len(req.feeds), max(1, min(len(picks), TRACE_BYTES // max(per_sample, 1))))
        if writer.count >= len(picks):
            break
    (folder / PICKS).write_text(json.dumps(picks))
    return tracer, tracer.graph(), writer.close(), picks


PICKS = "picks.json"


def spread(total: int, count: int) -> list[int]:
    """`count` sample indices spread evenly over `total`, the first one first."""
    count = max(1, min(count, total))
    return sorted({round(i * (total - 1) / max(count - 1, 1)) for i in range(count)})


def _artifact_trace(tracer, graph: TracedGraph, feeds: list[Feed], io: IO | None, folder: Path) -> Feeds:
    writer = FeedWriter(folder)
    for source_feed in feeds:
        feed = _artifact_feed(source_feed, io)
        traced = tracer.trace(feed)
        inputs = {graph.inputs[n]: _stored(v) for n, v in feed.items() if n in graph.inputs}
        writer.append({**inputs, **traced})
    return writer.close()


def _stored(value) -> np.ndarray:
    """A graph input as the traces keep it: float as float32; token ids and masks as they are
    (inputs only anchor the alignment; only float tensors are compared)."""
    value = np.asarray(value)
    return value.astype(np.float32, copy=False) if value.dtype.kind == "f" else value


def _artifact_feed(feed: Feed, io: IO | None) -> Feed:
    if io is None:
        return {n: np.asarray(v) for n, v in feed.items()}
    return {b.artifact_name: b.to_artifact(np.asarray(feed[b.name])) for b in io.inputs}


def _isolate(tracer, graph: TracedGraph, feeds: list[Feed], io: IO | None, layers: list[Layer], hub_feeds: Feeds,
             art_feeds: Feeds, folder: Path) -> Feeds:
    """Each layer's output with every held tensor given the hub's value for the ops reading it (at
    its taps, `reencoded.taps`: a W8A8 layer after its own output rounding, its readers from every
    dequantize of it)."""
    held = {layer.match.artifact: layer for layer in layers}
    taps = reencoded.taps(graph, list(held), art_feeds[0])
    writer = FeedWriter(folder, names=list(held))
    for i, source_feed in enumerate(feeds):
        hub_sample, art_sample = hub_feeds[i], art_feeds[i]
        given = {}
        for t, layer in held.items():
            exact = layer.match.view.to_artifact(hub_sample[layer.hub], np.shape(art_sample[t]))
            given.update({s: (exact * np.float32(u)).astype(np.float32, copy=False) for s, u in taps[t].given})
        traced = tracer.trace(_artifact_feed(source_feed, io), given)
        writer.append({t: traced[taps[t].tensor] / np.float32(taps[t].units) for t in held})
    isolated = writer.close()

    for t, layer in held.items():
        layer.isolated = compare_layer(layer.match.view, isolated.column(t), hub_feeds.column(layer.hub))
    return isolated


def _carry(hub_tracer, feeds: list[Feed], layers: list[Layer], isolated: Feeds, hub_feeds: Feeds,
           seconds: float, most: int = MAX_CARRIED) -> int:
    """What each layer's own error does to the outputs: the hub runs with the readers of that
    layer's tensor reading the hub's value plus (isolated output - hub's value), every other delta
    zero. One onnxruntime session for all layers; the worst on their own first, at most MAX_CARRIED
    of them and `seconds`. A layer whose NaN/Inf differ from the hub's is not carried."""
    from bridge.validators.compare import metrics

    graph = hub_tracer.graph()
    outputs, inputs = list(graph.outputs.values()), graph.inputs
    order = sorted((layer for layer in layers if layer.isolated is not None),
                   key=lambda layer: layer.isolated.snr_db if np.isfinite(layer.isolated.snr_db) else -np.inf)
    order = order[:most]
    inner = [layer for layer in order if layer.hub not in outputs]
    tensors, run = hub_tracer.perturbed([layer.hub for layer in inner]) if inner else ([], None)
    shapes = [{t: np.shape(hub_feeds.tensor(i, t)) for t in tensors} for i in range(len(hub_feeds))]
    start, done = time.perf_counter(), 0
    for layer in order:
        if time.perf_counter() - start > seconds:
            break
        if layer.hub in outputs:  # an output's isolated error is its error at the outputs
            layer.propagated, done = layer.isolated, done + 1
            continue
        if layer.hub not in tensors:
            continue
        samples = []
        for i, (own, hub_value) in enumerate(zip(as_hub(layer.match.view, isolated.column(layer.match.artifact),
                                                        hub_feeds.column(layer.hub)),
                                                 hub_feeds.column(layer.hub), strict=True)):
            delta = _delta(own, hub_value)
            if delta is None:
                break
            feed = {n: np.asarray(v) for n, v in feeds[i].items() if n in inputs}
            zeros = {t: np.zeros(shape, np.float32) for t, shape in shapes[i].items()}
            samples.append(run(feed, {**zeros, layer.hub: delta}))
        else:
            worst = None
            for o in outputs:
                m = metrics(*comparable([s[o] for s in samples], hub_feeds.column(o)), histogram=False)
                if worst is None or not m.snr_db >= worst.snr_db:
                    worst = m
            layer.propagated, done = worst, done + 1
    return done


def _delta(own: np.ndarray, hub: np.ndarray) -> np.ndarray | None:
    """own - hub, zero where both hold the same NaN/Inf; None where their NaN/Inf differ."""
    own, hub = np.asarray(own, np.float32), np.asarray(hub, np.float32)
    finite_own, finite_hub = np.isfinite(own), np.isfinite(hub)
    if not np.array_equal(finite_own, finite_hub):
        return None
    if finite_own.all():
        return own - hub
    if not np.array_equal(own[~finite_own], hub[~finite_hub], equal_nan=True):
        return None
    return np.where(finite_own, own - np.where(finite_hub, hub, 0), 0).astype(np.float32)


def _declared(req: LocalizeRequest, graph: TracedGraph, hub_graph: TracedGraph, art0: Feed,
              hub0: Feed) -> dict[str, tuple[str, str, View | None]]:
    """Artifact tensors whose hub tensor is known without looking at values: the interface (by
    the bindings), the converter's correspondence report, then names."""
    declared: dict[str, tuple[str, str, View | None]] = {}
    order = {t: i for i, op in enumerate(graph.ops) for t in op.outputs}
    hub_tensors = {t for op in hub_graph.ops for t in op.outputs if t in hub0}
    # names: a hub tensor's name as our converters and TensorFlow spell it
    keys: dict[str, list[str]] = {}
    for t in hub_tensors:
        keys.setdefault(_key(t), []).append(t)
    by_name: dict[str, list[str]] = {}
    for t in order:
        if t in art0:
            for k in _name_keys(graph.name(t)):
                by_name.setdefault(k, []).append(t)
    for k, arts in by_name.items():
        hubs = keys.get(k, [])
        if len(hubs) == 1:
            declared[max(arts, key=order.__getitem__)] = (hubs[0], "name", None)  # the last: a lowering's result
    for t, h in _relaid(graph, hub_graph, hub_tensors, order).items():
        declared[t] = (h, "name", None)
    for t, h in _corresponding(req.correspondence, graph, hub_graph, hub_tensors, order, art0, hub0).items():
        declared[t] = (h, "correspondence", None)
    bindings = req.io.inputs + req.io.outputs if req.io else ()
    for b in bindings:
        t = graph.inputs.get(b.artifact_name) or graph.outputs.get(b.artifact_name)
        if t is None or t not in art0 or b.name not in hub0:
            continue
        art_shape, hub_shape = np.shape(art0[t]), np.shape(hub0[b.name])
        perm = tuple(int(p) for p in np.argsort(b.perm)) if b.perm else None
        view = View(art_shape, hub_shape, art_shape, perm) if math.prod(art_shape) == math.prod(hub_shape) else None
        declared[t] = (b.name, "interface", view)
    if req.io is None:
        for name, t in [*graph.inputs.items(), *graph.outputs.items()]:
            if name in hub0 and t in art0:
                declared[t] = (name, "interface", None)
    return declared


_RELAID = re.compile(r"^(?P<node>.+)_(?P<side>input|output)_(?:nwc|nhwc|ndhwc)$")


def _relaid(graph: TracedGraph, hub_graph: TracedGraph, hub_tensors: set[str],
            order: Mapping[str, int]) -> dict[str, str]:
    """onnx2tf 2.x names the channel-last copy of a node's data input `<node>_input_nhwc` and of its
    output `<node>_output_nhwc` (`_nwc`, `_ndhwc` in 1-D and 3-D), and keeps those names in every mode
    it writes: the hub node's first input or output, re-laid. This maps a TFLite file without its
    correspondence report (`bridge validate`, `bridge debug`); `_input_nhwc_padded` (a PAD's
    output) matches nothing."""
    by_node = {op.name: op for op in hub_graph.ops}
    found: dict[str, list[str]] = {}
    for t in order:
        m = _RELAID.match(graph.name(t))
        op = by_node.get(m["node"]) if m else None
        tensors = (op.inputs if m and m["side"] == "input" else op.outputs) if op is not None else ()
        if tensors and tensors[0] in hub_tensors:
            found.setdefault(tensors[0], []).append(t)
    return {arts[0]: h for h, arts in found.items() if len(arts) == 1}


def _corresponding(correspondence: Mapping[str, str], graph: TracedGraph, hub_graph: TracedGraph,
                   hub_tensors: set[str], order: Mapping[str, int], art0: Feed, hub0: Feed) -> dict[str, str]:
    """Artifact tensor -> the hub tensor it holds, from the converter's report (onnx2tf 2.x: each
    ONNX output -> the TFLite tensor its value ends up in, through renames and fusions). Several hub
    tensors resolve to one TFLite tensor when nodes were fused (a Conv's output and its Relu6's both
    become the fused CONV_2D's) or a copy was folded: the tensor holds the last of them in the hub's
    order, unless its size says otherwise (`_held`). Names that are not unique in the file are left
    to the other evidence."""
    by_name: dict[str, list[str]] = {}
    for t in order:
        by_name.setdefault(graph.name(t), []).append(t)
    hub_order = {t: i for i, op in enumerate(hub_graph.ops) for t in op.outputs}
    candidates: dict[str, list[str]] = {}
    for h, name in correspondence.items():
        arts = by_name.get(name, [])
        if h in hub_tensors and len(arts) == 1:
            candidates.setdefault(arts[0], []).append(h)
    return {t: _held(art0.get(t), sorted(hs, key=lambda h: hub_order.get(h, -1)), hub0)
            for t, hs in candidates.items()}


def _held(value, hubs: list[str], hub0: Feed) -> str:
    """Of the hub tensors (in the hub's order) the converter says one artifact tensor holds, the last
    whose size (L2 norm on the first sample) is the artifact tensor's within a factor of 1.5. onnx2tf
    also reports a node it moved into a reader as held by its input: a hard-swish's `Div` by 6,
    folded into the next `Mul`'s constant (PP-OCRv4), is reported at the product before it, six times
    the Div's value; read as the Div's, that layer looks 14 dB off and its readers are fed a sixth
    of what they read in the isolated profile."""
    if value is None or len(hubs) == 1:
        return hubs[-1]
    size = float(np.linalg.norm(np.asarray(value, np.float64)))
    for h in reversed(hubs):
        other = float(np.linalg.norm(np.asarray(hub0[h], np.float64))) if h in hub0 else None
        if other is None or np.shape(hub0[h]) and np.size(hub0[h]) != np.size(value):
            continue
        if size == other or (size > 0 and other > 0 and abs(math.log(size / other)) <= math.log(1.5)):
            return h
    return hubs[-1]


_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


def _key(name: str) -> str:
    return _UNSAFE.sub("_", name)


def _name_keys(name: str) -> list[str]:
    """The hub names an artifact tensor's name may stand for: itself (ONNX), without coremltools'
    fp16 suffix (our MIL ops are named after the ONNX tensor), TensorFlow's first fused name."""
    out = [_key(name)]
    if name.endswith("_cast_fp16"):
        out.append(_key(name[: -len("_cast_fp16")]))
    if ";" in name or name.endswith(":0"):
        out.append(_key(name.split(";")[0].removesuffix(":0")))
    return list(dict.fromkeys(out))


class _Report:
    """Layers as report.json shows them: hub nodes by the names the user knows."""

    def __init__(self, req: LocalizeRequest, hub: TracedGraph, art: TracedGraph, layers: list[Layer]):
        self.req, self.hub, self.art = req, hub, art
        self.by_hub = {layer.hub: layer for layer in layers}

    def original(self, index: int) -> str:
        name = self.hub.ops[index].name
        return self.req.node_names.get(name, name)

    def layer(self, layer: Layer, brief: bool = False) -> dict:
        ops = self.hub.ops
        nodes = layer.nodes
        main = next((n for n in nodes if ops[n].op_type in MAIN_OPS),
                    next((n for n in reversed(nodes) if not ops[n].copies), nodes[-1] if nodes else None))
        out = {
            "node": self.original(main) if main is not None else layer.hub,
            "op_type": ops[main].op_type if main is not None else None,
            "nodes": [self.original(n) for n in nodes[:MAX_GROUP]],
            "op_types": [ops[n].op_type for n in nodes[:MAX_GROUP]],
        }
        if len(nodes) > MAX_GROUP:
            out["nodes_truncated"] = len(nodes) - MAX_GROUP
        module = _module(out["node"]) if self.req.framework == "torch" else None
        if module:
            out["module"] = module
        m: Match = layer.match
        out.update({"tensor": layer.hub, "artifact_tensor": self.art.name(m.artifact), "artifact_op": layer.art_op,
                    "matched_by": m.how, "layout": m.view.to_json(), "passed": layer.passed})
        out.update(_brief(layer.metrics))
        before = input_snr(layer, self.by_hub)
        jump = jump_db(layer, self.by_hub)
        out["input_snr_db"] = _finite(before)
        out["jump_db"] = _finite(jump)
        if layer.isolated is not None:
            out["isolated"] = _brief(layer.isolated)
            if layer.propagated is not None:
                carried = layer.propagated.to_json()
                out["isolated"]["output_snr_db"] = carried["snr_db"]
                out["isolated"]["output_rel_l2"] = carried["rel_l2"]
        if not brief:
            out["inputs"] = list(layer.inputs)
            if layer.reasons:
                out["reasons"] = layer.reasons
        return out


def _module(node: str) -> str | None:
    """torch.onnx names nodes by the module path: `/features/features.3/features.3.0/Conv` is the
    Conv of module `features.3.0`."""
    parts = node.split("/")
    if node.startswith("/") and len(parts) >= 3 and parts[-2]:
        return parts[-2]
    return None


def _brief(m) -> dict:
    if m is None:
        return {}
    full = m.to_json()
    out = {k: full[k] for k in ("max_abs", "mean_abs", "rel_l2", "cosine", "snr_db")}
    if m.nonfinite:
        out["nonfinite"] = full["nonfinite"]
    return out


def _finite(x: float) -> float | None:
    """dB figures rounded as the report rounds snr_db."""
    return round(float(x), 2) if math.isfinite(x) else None
