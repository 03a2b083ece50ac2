"""Where the isolated profile gives a layer the hub's value of its tensor, and reads its own.

A tracer gives a value to the ops that read one tensor. Where an artifact re-encodes a tensor
through values the tracer does not see (Core ML's W8A8: `conv` -> `quantize` -> int8 ->
`dequantize`), the converter's passes may read that hidden tensor again elsewhere:
coremltools' `distributive_quantized_binary_op_scale_normalization` gives an `add` of two
dequantized inputs dequantize ops of their own (scales s_x/s_y and 1) and divides the add's output
by s_y (its quantize's scale with it). Given at the first dequantize's output, the hub's value
never reaches such an add: it reads the file's own int8 tensor with every error upstream of it,
and PP-OCRv4 det's neck adds ranked first. And the add's own output, named after its ONNX tensor,
holds 1/s_y of the value it is named for, so its readers were given s_y times the hub's value.

So where every reader of a layer's float tensor re-encodes it (a quantize), the layer is tapped at
all of that tensor's float re-encodings: each dequantize's readers, whichever it is, get the hub's
value in that dequantize's units, and the layer's own value is read after its own rounding (what
keeping it in float removes: its int8 weights and the rounding of its output, from exact inputs).
Elsewhere it is tapped at its own tensor. What units a tensor holds is read from the artifact
alone (`units`): a dequantize holds its source's value times their ratio on the artifact's own
first sample (they differ by int8 rounding alone), and an op whose float inputs all hold their
values in one unit computes in it (a normalized add); anything else computes in the hub's units.
The hub's values never set a scale, so a layer that is off by a constant factor still shows it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from bridge.base.arrays import Feed
from bridge.validators.localisation.graph import TracedGraph, TracedOp


@dataclass(frozen=True)
class Tap:
    tensor: str  # where the layer's own value is read
    units: float  # that tensor holds `units` times the value the layer is named for
    given: tuple[tuple[str, float], ...]  # where the hub's value is given, each in its own units


def taps(graph: TracedGraph, held: list[str], first: Feed) -> dict[str, Tap]:
    """For each held artifact tensor, its tap. A tensor is given one value: a tap that would give
    one already given keeps the held tensor itself."""
    producer = {t: op for op in graph.ops for t in op.outputs}
    readers: dict[str, list[TracedOp]] = {}
    for op in graph.ops:
        for t in op.inputs:
            readers.setdefault(t, []).append(op)
    unit = units(graph, first)
    out: dict[str, Tap] = {}
    given = set(held)
    for t in held:
        root = _source(t, producer, first)
        encoded = _encodings(root, readers, first)
        spots = encoded or [root]
        if any(s != t and s in given for s in spots):
            spots, encoded = [t], []
        given.update(spots)
        read = t if t in encoded else spots[0]
        out[t] = Tap(read, unit.get(read, 1.0), tuple((s, unit.get(s, 1.0)) for s in spots))
    return out


def _encodings(root: str, readers: Mapping[str, list[TracedOp]], first: Feed) -> list[str]:
    """Where every reader of `root` re-encodes it through a tensor the tracer does not see (a
    quantize): the float tensors read back from those (the dequantizes), else none."""
    found: list[str] = []
    for q in readers.get(root, ()):
        if not q.copies or not q.outputs or q.outputs[0] in first:
            return []
        found += [d.outputs[0] for d in readers.get(q.outputs[0], ()) if d.copies and d.outputs
                  and d.outputs[0] in first and np.shape(first[d.outputs[0]]) == np.shape(first[root])]
    return found


def units(graph: TracedGraph, first: Feed) -> dict[str, float]:
    """Every traced float tensor's units relative to the value it stands for (1.0: the hub's)."""
    producer = {t: op for op in graph.ops for t in op.outputs}
    found: dict[str, float] = {}
    for op in graph.ops:
        for t in op.outputs:
            if t not in first:
                continue
            root = _source(t, producer, first)
            if root != t:
                found[t] = _snap(_ratio(first[root], first[t]) * found.get(root, 1.0))
                continue
            ins = [found.get(i, 1.0) for i in op.inputs if i in first]
            found[t] = ins[0] if ins and all(abs(np.log(u / ins[0])) < _SAME for u in ins) else 1.0
    return found


_SAME = np.log(1.02)  # int8 rounding moves a ratio fitted on a whole tensor far less than this


def _source(t: str, producer: Mapping[str, TracedOp], first: Feed) -> str:
    """The float tensor `t` re-encodes (a dequantize of a quantize of it), else `t`."""
    op = producer.get(t)
    if op is None or not op.copies or not op.inputs or op.inputs[0] in first:
        return t
    hidden = producer.get(op.inputs[0])
    if hidden is None or not hidden.copies or not hidden.inputs:
        return t
    root = hidden.inputs[0]
    return root if root in first and np.shape(first[root]) == np.shape(first[t]) else t


def _ratio(root: np.ndarray, encoded: np.ndarray) -> float:
    """The scalar k with encoded ~ k * root: the median ratio over the root's larger values (a
    quarter of its largest magnitude and up: int8's rounding moves them by 1/50 at most), leaving
    out those int8 clipped (they sit at the encoding's largest magnitude); 1 where none is left."""
    a, b = np.asarray(root, np.float64).ravel(), np.asarray(encoded, np.float64).ravel()
    ok = np.isfinite(a) & np.isfinite(b)
    if not ok.any():
        return 1.0
    a, b = a[ok], b[ok]
    big = (np.abs(a) >= 0.25 * np.abs(a).max()) & (np.abs(b) < np.abs(b).max()) & (a != 0)
    return float(np.median(b[big] / a[big])) if big.any() else 1.0


def _snap(k: float) -> float:
    return 1.0 if not k > 0 or abs(np.log(k)) < _SAME else k
