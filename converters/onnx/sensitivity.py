"""How much each layer alone costs in a lower precision, measured on the hub (the `sensitivity` stage).

The fp16 ranking of the mixed-precision search (int8 ranks by the isolated profile of localisation
on its first artifact, `bridge.mixed.ranked_layers`, and falls back to this where that finds no
layer): one onnxruntime session of the hub in which every float output of every layer passes through a
switch,

    y' = Where(s, low(y), y)        s: a scalar bool input

where `low` is the lower precision: float16 rounding (`Cast` to FLOAT16 and back), or int8
(`QuantizeLinear`/`DequantizeLinear`, symmetric, with the scale from the calibration range the int8
lanes use). With every switch at 0 the session is the float hub; one run per layer with its switch
at 1 gives the graph outputs when that layer alone computes in the lower precision, carried through
the float rest (prior art: onnxruntime's `quantization.qdq_loss_debug` compares per-tensor QDQ
outputs, one tensor at a time). A layer's score is the error power it causes at the outputs,
relative to their signal power, summed over outputs and samples; Inf/NaN count as infinite.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from bridge.base.arrays import Feed
from bridge.base.inference import infer
from bridge.base.lazy import require

_FLOAT, _BOOL = 1, 9  # TensorProto.FLOAT, BOOL
# Nodes that only move or reshape values: float16 or int8 rounding of their output repeats their
# input's (the quantizers keep the input's scale), so they are never what to keep.
_MOVES = {"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Concat", "Split", "Slice",
          "Gather", "Shape", "Expand", "Tile", "Pad", "MaxPool", "Relu", "Constant", "Cast"}


def rank(hub_path: str, feeds: Sequence[Feed], kind: str, ranges: dict[str, tuple[float, float]] | None = None,
         budget_seconds: float = 120.0) -> list[tuple[str, float]]:
    """The stage's entry point: (hub node name, score) for every layer, the most sensitive first
    (ties in graph order). `kind`: fp16 | int8 (int8 needs `ranges`). Stops measuring when
    `budget_seconds` are spent; the layers left unmeasured follow, scored NaN, in graph order."""
    onnx = require("onnx")
    ort = require("onnxruntime")
    model = onnx.load(hub_path)
    switches = _with_switches(model, kind, ranges or {})
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every switch
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]
    off = {name: np.zeros((), bool) for name in switches.values()}
    samples = [dict(f) for f in feeds]
    clean = [session.run(outputs, {**s, **off}) for s in samples]
    start, scores = time.perf_counter(), {}
    for layer, switch in switches.items():
        if time.perf_counter() - start > budget_seconds:
            break
        on = {**off, switch: np.ones((), bool)}
        scores[layer] = sum(_relative_error(session.run(outputs, {**s, **on}), c)
                            for s, c in zip(samples, clean, strict=True))
    order = list(switches)
    measured = sorted(scores, key=lambda n: (-scores[n], order.index(n)))
    return [(n, float(scores[n])) for n in measured] + [(n, float("nan")) for n in order if n not in scores]


def _relative_error(actual: list[np.ndarray], reference: list[np.ndarray]) -> float:
    total = 0.0
    for a, r in zip(actual, reference, strict=True):
        if not np.issubdtype(r.dtype, np.floating):
            continue
        a64, r64 = a.astype(np.float64), r.astype(np.float64)
        if not np.all(np.isfinite(a64)):
            return float("inf")
        total += float(np.sum((a64 - r64) ** 2) / max(np.sum(r64 ** 2), 1e-30))
    return total


def _with_switches(model, kind: str, ranges: dict[str, tuple[float, float]]) -> dict[str, str]:
    """Edit `model` in place: every float output of every layer that computes (and, for int8, its
    weights) goes through a switch; returns {node name: its switch input}, in graph order."""
    from onnx import helper

    types = _float_tensors(model)
    weight_values = {t.name: t for t in model.graph.initializer if t.data_type == _FLOAT and len(t.dims) >= 2}
    nodes = list(model.graph.node)
    del model.graph.node[:]
    switches: dict[str, str] = {}
    for i, node in enumerate(nodes):
        outs = [] if node.op_type in _MOVES or not node.name else \
            [o for o in node.output if o in types and (kind == "fp16" or o in ranges)]
        switch = f"__bridge_switch_{i}"
        weights = _switched_weights(model.graph, node, switch, weight_values) if kind == "int8" and outs else 0
        for o in outs:  # the node writes `o__raw`; `o` is rebuilt after it (protobuf copies on append)
            node.output[list(node.output).index(o)] = f"{o}__raw"
        model.graph.node.append(node)
        if not outs and not weights:
            continue
        model.graph.input.append(helper.make_tensor_value_info(switch, _BOOL, []))
        switches[node.name] = switch
        for o in outs:
            _switched(model.graph, o, switch, kind, ranges.get(o))
    return switches


def _switched_weights(g, node, switch: str, weights: dict) -> int:
    """int8: the node's float weights (initializers of rank 2+) read through the switch too, as int8
    per output channel (Conv: axis 0, ConvTranspose: 1, MatMul/Gemm: the last), the TFLite and Core
    ML quantizers' granularity. Returns how many it switched."""
    from onnx import helper, numpy_helper

    count = 0
    for k, name in enumerate(node.input):
        if name not in weights:
            continue
        w = numpy_helper.to_array(weights[name]).astype(np.float32)
        axis = {"Conv": 0, "ConvTranspose": 1}.get(node.op_type, w.ndim - 1)
        keep = tuple(d for d in range(w.ndim) if d != axis)
        scale = np.maximum(np.abs(w).max(axis=keep, keepdims=True), 1e-12) / 127.0
        low = (np.clip(np.round(w / scale), -127, 127) * scale).astype(np.float32)
        g.initializer.append(numpy_helper.from_array(low, f"{name}__int8_{switch}"))
        g.node.append(helper.make_node("Where", [switch, f"{name}__int8_{switch}", name], [f"{name}__{switch}"]))
        node.input[k] = f"{name}__{switch}"
        count += 1
    return count


def _switched(g, output: str, switch: str, kind: str, span) -> None:
    """`output` rebuilt from `output__raw`: the raw value, or its low-precision copy when the switch is on."""
    from onnx import TensorProto, helper, numpy_helper

    raw = f"{output}__raw"
    if kind == "fp16":
        g.node.append(helper.make_node("Cast", [raw], [f"{raw}_h"], to=TensorProto.FLOAT16))
        g.node.append(helper.make_node("Cast", [f"{raw}_h"], [f"{raw}_low"], to=TensorProto.FLOAT))
    else:
        scale = np.float32(max(abs(span[0]), abs(span[1]), 1e-8) / 127.0)
        g.initializer.append(numpy_helper.from_array(np.array(scale, np.float32), f"{raw}_scale"))
        g.initializer.append(numpy_helper.from_array(np.array(0, np.int8), f"{raw}_zero"))
        g.node.append(helper.make_node("QuantizeLinear", [raw, f"{raw}_scale", f"{raw}_zero"], [f"{raw}_q"]))
        g.node.append(helper.make_node("DequantizeLinear", [f"{raw}_q", f"{raw}_scale", f"{raw}_zero"],
                                       [f"{raw}_low"]))
    g.node.append(helper.make_node("Where", [switch, f"{raw}_low", raw], [output]))


def _float_tensors(model) -> set[str]:
    inferred = infer(model)
    return {vi.name for vi in (*inferred.graph.value_info, *inferred.graph.output)
            if vi.type.tensor_type.elem_type == _FLOAT}
