"""Fixed shapes fold through the hub, so every lane receives a static graph.

Exporters write dynamic dims (`batch`, `sequence`, paddle2onnx's `p2o.DynamicDimension.3`) and the
shape arithmetic built on them (`Shape -> Gather -> Concat -> Reshape`, `ConstantOfShape`, `Range`,
`Expand` of an attention mask). Once `--input` (or the source itself) fixes the inputs, all of
that is constant. Three existing tools do the work, in this order:

1. the input sizes are written into the graph's inputs (`fix_inputs`), every axis except the
   `--dynamic` ones, which keep (or get) a symbol;
2. when a symbol is left, onnxruntime's symbolic shape inference propagates it by name through
   Reshape and Concat of shape values, where onnx's own inference gives up (`unk__12`), so the
   dims that do not depend on it are known: BERT's batch and head dims with a dynamic sequence;
3. onnxslim (`hub.simplify`) infers shapes and folds every subgraph whose inputs are now known;
4. the shapes onnxslim wrote must agree with onnx's own inference wherever that pins a dim down
   (`reinfer`): onnxslim 0.1.98 declares wrong output shapes for an uneven `Split(num_outputs=...)`
   and a `ReduceSum` over empty axes, which the checker then rejects.

No pass of our own is needed for the exports measured (benchmarks/zoo): PP-OCR det/rec/cls,
YOLOv8, torch.onnx.export's transformers, tf2onnx's Keras models. What was folded is reported
(`Folding`, report.json's `hub.folding`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bridge.base.inference import size_bound, weightless
from bridge.base.lazy import require
from bridge.base.onnx_files import PROTOBUF_LIMIT
from bridge.base.tensors import TensorSpec

SHAPE_SOURCES = ("Shape", "Size")  # where run-time shapes enter a graph

@dataclass(frozen=True)
class Folding:
    """What the hub did to the source's shapes: for report.json's `hub.folding`."""

    inputs: dict[str, list[int | str]]  # each input's dims in the hub; a symbol names a --dynamic axis
    written: tuple[str, ...]  # inputs whose dims the hub fixed (the source left them dynamic)
    nodes: tuple[int, int]  # before and after simplification
    removed: dict[str, int]  # node count removed, per op type
    shape_ops_left: dict[str, int]  # Shape/Size nodes still in the hub (reading --dynamic axes)
    symbolic: str = "not needed"  # onnxruntime's symbolic shape inference: used | not needed | failed: ...
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"inputs": self.inputs, "written": list(self.written), "nodes_before": self.nodes[0],
                "nodes_after": self.nodes[1], "removed": self.removed, "shape_ops_left": self.shape_ops_left,
                "symbolic_inference": self.symbolic}


def fix_inputs(model, specs: Sequence[TensorSpec]) -> tuple[str, ...]:
    """Write each spec's sizes into the graph input of that name, except its `--dynamic` axes, which
    keep the source's symbol (or get `<input>_<axis>`). An input whose rank differs from its spec's
    is left alone. Returns the inputs whose dims changed; when any did, intermediate shapes the
    exporter stored are dropped, so nothing stale survives into inference."""
    by_name = {s.name: s for s in specs}
    written = []
    for vi in model.graph.input:
        spec = by_name.get(vi.name)
        tensor = vi.type.tensor_type
        if spec is None or not tensor.HasField("shape") or len(tensor.shape.dim) != len(spec.shape):
            continue
        changed = False
        for axis, (dim, size) in enumerate(zip(tensor.shape.dim, spec.shape, strict=True)):
            if axis in spec.dynamic:
                if not dim.HasField("dim_value") and not dim.dim_param:
                    dim.dim_param, changed = f"{vi.name}_{axis}", True
                continue
            if not (dim.HasField("dim_value") and dim.dim_value == size):
                dim.Clear()
                dim.dim_value, changed = int(size), True
        if changed:
            written.append(vi.name)
    if written:
        del model.graph.value_info[:]
    return tuple(written)


def symbolic_inference(model) -> tuple[object, str]:
    """onnxruntime's symbolic shape inference, when dims stay symbolic. It is an optimization: where
    it cannot follow a graph (it asserts on some ops it does not know), onnxslim still folds what
    onnx's own inference can, and the failure is reported."""
    if all(d.HasField("dim_value") for vi in model.graph.input for d in vi.type.tensor_type.shape.dim):
        return model, "not needed"
    if size_bound(model) > PROTOBUF_LIMIT - (64 << 20):
        return model, "not run (the graph is over 2 GB)"
    require("onnxruntime")
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    try:
        inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    except Exception as e:  # noqa: BLE001 - it raises bare AssertionError/Exception on ops it cannot follow
        text = " ".join(str(e).split())[:200]
        return model, f"failed: {type(e).__name__}{': ' + text if text else ''}"
    return (inferred, "used") if inferred is not None else (model, "failed: no result")


def reinfer(model):
    """Where onnx's own inference (what the checker and onnxruntime follow) pins a dim down, the
    stored shape must agree with it: a conflicting dim, or a rank, is replaced by onnx's. Dims it
    cannot pin down keep what onnxslim (with the symbolic inference before it) found."""
    bare = weightless(model)  # no weights: a model of any size fits protobuf's limit
    del bare.graph.value_info[:]
    for out in bare.graph.output:
        out.type.tensor_type.ClearField("shape")
    graph = require("onnx").shape_inference.infer_shapes(bare).graph
    inferred = {v.name: v.type.tensor_type for v in (*graph.value_info, *graph.output)
                if v.type.tensor_type.HasField("shape")}
    outputs = {o.name for o in model.graph.output}
    for value in (*model.graph.value_info, *model.graph.output):
        theirs, ours = inferred.get(value.name), value.type.tensor_type
        if theirs is None or not (ours.HasField("shape") or value.name in outputs):
            continue
        if not ours.HasField("shape") or len(theirs.shape.dim) != len(ours.shape.dim):
            ours.shape.CopyFrom(theirs.shape)
            continue
        for dim, known in zip(ours.shape.dim, theirs.shape.dim, strict=True):
            if known.HasField("dim_value") and not (dim.HasField("dim_value") and dim.dim_value == known.dim_value):
                dim.Clear()
                dim.dim_value = known.dim_value
    return model


def fold(model, specs: Sequence[TensorSpec], simplify: Callable) -> tuple[object, Folding]:
    """Fix the inputs, infer, simplify (`simplify` is the hub's onnxslim step)."""
    before = Counter(n.op_type for n in model.graph.node)
    written = fix_inputs(model, specs)
    model, symbolic = symbolic_inference(model)
    model = reinfer(simplify(model))
    after = Counter(n.op_type for n in model.graph.node)
    removed = {op: before[op] - after[op] for op in sorted(before) if before[op] > after[op]}
    weights = {t.name for t in model.graph.initializer}
    inputs = {vi.name: [d.dim_value if d.HasField("dim_value") else d.dim_param or "?"
                        for d in vi.type.tensor_type.shape.dim] for vi in model.graph.input if vi.name not in weights}
    left = {op: after[op] for op in SHAPE_SOURCES if after[op]}
    return model, Folding(inputs, written, (sum(before.values()), sum(after.values())), removed, left, symbolic)
