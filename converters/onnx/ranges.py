"""The hub's activation ranges, measured once per run on onnxruntime (the `activation-ranges`
stage): int8 calibration ranges for the lanes that quantize with them (coremltools' own activation
calibration calls `predict`, which exists only on macOS), and the fp16 range check (activations
beyond float16's maximum, and float constants it cannot hold).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from bridge.base.arrays import Feed, Feeds, FeedWriter
from bridge.base.cpus import onnxruntime_options
from bridge.base.errors import ConversionError
from bridge.base.inference import infer
from bridge.base.lazy import require
from bridge.base.numerics import FP16_MAX, Constant, Overflow, Ranges

_FLOAT_TYPES = (1, 11)  # TensorProto FLOAT, DOUBLE
_CHUNK = 1 << 20  # elements measured at a time: a weight can be large
RUNTIME = "onnxruntime"  # the hub's parity runtime, as its runner names it


def measure(hub_path: str, parity: Sequence[Feed], calibration: Sequence[Feed], node_names: dict[str, str], *,
            fp16: bool, calibrated: bool) -> Ranges:
    """The stage's entry point: calibration ranges when a lane quantizes with them (calibration
    samples only: parity samples never calibrate), and the fp16 findings over every sample when a
    route computes in float16."""
    model = require("onnx").load(hub_path)
    probe = Probe(model)
    return _measured(model, probe, probe.ranges(parity) if fp16 and len(parity) else {}, calibration,
                     node_names, parity, fp16=fp16, calibrated=calibrated)


def run_and_measure(hub_path: str, parity: Sequence[Feed], calibration: Sequence[Feed], node_names: dict[str, str],
                    out_dir: str, *, fp16: bool, calibrated: bool) -> tuple[tuple[str, Feeds], Ranges]:
    """The hub's parity run and `measure` in one session (the `onnx-runtime` stage when a route
    needs the ranges): the parity samples run once, their outputs are written to `out_dir` as
    `run_samples` writes them, and their activations are measured on the way. The hub runs with
    graph optimizations off (a plain parity run keeps onnxruntime's basic ones: the outputs may
    differ in their last bits)."""
    model = require("onnx").load(hub_path)
    probe = Probe(model)
    writer = FeedWriter(out_dir, probe.outputs)
    if fp16:
        seen = probe.ranges(parity, writer.append)
    else:  # only calibration samples are measured: the parity samples compute the outputs alone
        seen = {}
        for feed in parity:
            writer.append(probe.run(feed))
    ranges = _measured(model, probe, seen, calibration, node_names, parity, fp16=fp16, calibrated=calibrated)
    return (RUNTIME, writer.close()), ranges


def _measured(model, probe: Probe, parity_ranges: dict, calibration: Sequence[Feed], node_names: dict[str, str],
              parity: Sequence[Feed], *, fp16: bool, calibrated: bool) -> Ranges:
    cal = probe.ranges(calibration) if (calibrated or fp16) and len(calibration) else {}
    found: tuple = ()
    if fp16:  # each sample runs once: the calibration ranges serve the fp16 check too
        ranges = _union(parity_ranges, cal)
        ranges.update(_input_ranges(model, [*parity, *calibration]))
        found = tuple(_fp16_findings(model, ranges, node_names))
    return Ranges(calibration=cal if calibrated else {}, fp16=found)


def _union(a: dict[str, tuple[float, float]], b: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    out = dict(a)
    for name, (lo, hi) in b.items():
        out[name] = (min(lo, out[name][0]), max(hi, out[name][1])) if name in out else (lo, hi)
    return out


def activation_ranges(model, feeds: Sequence[Feed]) -> dict[str, tuple[float, float]]:
    """Min/max of every float tensor the graph computes (its outputs included) over `feeds` (`Probe`)."""
    return Probe(model).ranges(feeds)


class Probe:
    """The hub on onnxruntime with every float tensor it computes made a graph output, graph
    optimizations off (coremltools' own activation calibration calls `predict`, which exists only on
    macOS). `outputs` are the graph's own outputs, first in every run."""

    def __init__(self, model) -> None:
        onnx = require("onnx")
        ort = require("onnxruntime")
        self.outputs = [o.name for o in model.graph.output]
        floats = {vi.name for vi in infer(model).graph.value_info if vi.type.tensor_type.elem_type == 1}
        extra = [onnx.helper.make_tensor_value_info(n, 1, None) for n in sorted(floats - set(self.outputs))]
        model.graph.output.extend(extra)  # added for the session, then taken off again: no copy of the weights
        try:
            blob = model.SerializeToString()
        finally:
            del model.graph.output[len(self.outputs):]
        opts = onnxruntime_options(ort)
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        self.session = ort.InferenceSession(blob, opts, providers=["CPUExecutionProvider"])
        del blob
        self.names = [o.name for o in self.session.get_outputs()]

    def run(self, feed: Feed) -> Feed:
        """The graph's own outputs (onnxruntime computes only what they need)."""
        return dict(zip(self.outputs, self.session.run(self.outputs, feed), strict=True))

    def ranges(self, feeds: Sequence[Feed], sink: Callable[[Feed], None] | None = None
               ) -> dict[str, tuple[float, float]]:
        """Min/max of every float tensor over `feeds`; NaN/Inf values are left out of the range (a
        tensor with no finite value has none). `sink` gets each sample's graph outputs."""
        if not feeds:
            raise ConversionError("activation ranges need at least one sample")
        lo: dict[str, float] = {}
        hi: dict[str, float] = {}
        for feed in feeds:
            values = self.session.run(self.names, feed)
            if sink is not None:
                sink(dict(zip(self.outputs, values[:len(self.outputs)], strict=True)))
            for name, value in zip(self.names, values, strict=True):
                if value.dtype != np.float32 or value.size == 0:
                    continue
                low, high = _finite_extremes(value)
                if low is not None:
                    lo[name] = min(lo.get(name, np.inf), low)
                    hi[name] = max(hi.get(name, -np.inf), high)
        return {n: (lo[n], hi[n]) for n in lo}


def _finite_extremes(value: np.ndarray) -> tuple[float | None, float | None]:
    """min and max of the finite values (one pass over the tensor when all are finite)."""
    low, high = float(value.min()), float(value.max())
    if np.isfinite(low) and np.isfinite(high):  # a NaN anywhere makes min and max NaN
        return low, high
    value = value[np.isfinite(value)]
    return (float(value.min()), float(value.max())) if value.size else (None, None)


def fp16_overflows(model, feeds: Sequence[Feed], node_names: dict[str, str]) -> list[Overflow | Constant]:
    """The `fp16-ranges` stage: every input and computed tensor of the hub beyond +-65504 on the
    samples of `sets` (parity and calibration), in graph order (the first one is where the overflow
    starts), then every float constant float16 cannot hold (`fp16_constants`). A Constant node's
    output is reported as a constant only."""
    ranges = activation_ranges(model, feeds)
    ranges.update(_input_ranges(model, feeds))
    return _fp16_findings(model, ranges, node_names)


def _fp16_findings(model, ranges: dict[str, tuple[float, float]],
                   node_names: dict[str, str]) -> list[Overflow | Constant]:
    produced = [("input", i.name) for i in model.graph.input]
    produced += [(node_names.get(n.name, n.name), out) for n in model.graph.node if n.op_type != "Constant"
                 for out in n.output]
    found: list[Overflow | Constant] = []
    for node, name in produced:
        peak = max(map(abs, ranges.get(name, (0.0, 0.0))))
        if peak > FP16_MAX:
            found.append(Overflow(name, node, peak))
    return found + fp16_constants(model, node_names)


def fp16_constants(model, node_names: dict[str, str]) -> list[Constant]:
    """Float constants beyond +-65504, or single values float16 rounds to zero, in graph order.
    Read from the graph, not measured: the activation ranges see the main graph's Constant nodes
    but neither initializers nor subgraphs."""
    found = []
    for tensor, node, graph, values in _float_constants(model.graph, node_names, None):
        c = Constant(tensor, node, _peak(values), values.size, graph)
        if c.overflows or c.vanishes:
            found.append(c)
    return found


def _float_constants(graph, node_names: dict[str, str], owner: str | None):
    """(tensor, Constant node or None, owner, values) for each float constant of `graph` and of
    the subgraphs (If branches, Loop and Scan bodies) of its nodes."""
    to_array = require("onnx").numpy_helper.to_array
    for t in graph.initializer:
        if t.data_type in _FLOAT_TYPES:
            yield t.name, None, owner, to_array(t)
    for node in graph.node:
        name = node_names.get(node.name, node.name) if owner is None else node.name  # subgraphs keep names
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            values = _constant_value(node, to_array)
            if values is not None:
                yield node.output[0], name, owner, values
        for attr in node.attribute:
            for g in [attr.g] if attr.HasField("g") else attr.graphs:
                yield from _float_constants(g, node_names, f"{node.op_type} {name} ({attr.name})")


def _constant_value(node, to_array) -> np.ndarray | None:
    for attr in node.attribute:
        if attr.name == "value" and attr.t.data_type in _FLOAT_TYPES:
            return to_array(attr.t)
        if attr.name == "sparse_value" and attr.sparse_tensor.values.data_type in _FLOAT_TYPES:
            return to_array(attr.sparse_tensor.values)
        if attr.name == "value_float":
            return np.array([attr.f], np.float32)
        if attr.name == "value_floats":
            return np.array(attr.floats, np.float32)
    return None


def _peak(values: np.ndarray) -> float:
    """The largest finite |x|, a chunk at a time (a whole-tensor `abs` would double a large weight
    in memory). NaN and +-Inf are left out: they are the same in float16."""
    flat = np.ravel(values)
    peak = 0.0
    for start in range(0, flat.size, _CHUNK):
        mag = np.abs(flat[start:start + _CHUNK])
        peak = max(peak, float(mag.max(initial=0.0, where=mag < np.inf)))
    return peak


def _input_ranges(model, feeds: Sequence[Feed]) -> dict[str, tuple[float, float]]:
    """Inputs overflow too: Core ML casts an fp32 input to fp16 at its first fp16 op."""
    out = {}
    for spec in model.graph.input:
        values = [f[spec.name][np.isfinite(f[spec.name])] for f in feeds
                  if spec.name in f and f[spec.name].dtype.kind == "f"]
        values = [v for v in values if v.size]
        if values:
            out[spec.name] = (min(float(v.min()) for v in values), max(float(v.max()) for v in values))
    return out
