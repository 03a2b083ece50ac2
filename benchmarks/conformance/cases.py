"""onnx's backend node tests as the models a user's export would have.

    python -m benchmarks.conformance.cases [--out benchmarks/conformance/cases.json]

Each node test is one ONNX node whose every input is a graph input, fed from
`test_data_set_0/input_<i>.pb`. An exported model is not like that: its data flows in, while axes,
shapes, indices, pads, scales and weights are constants in the graph. So:

**The rule.** A graph input stays a graph input when it is a float tensor (float32, float16 or
float64) and either it is the node's first input, or the op is a pure elementwise op over its
inputs (`ELEMENTWISE`: Add, Sub, Mul, Div, Pow, Max, Min, Sum, Mean, Mod, the comparisons, and
Where's two branches), where every float input is data. Every other input (any non-float
tensor, and float second operands such as Conv/ConvTranspose W and B, Gemm/MatMul B, norm scales,
Clip bounds, Resize scales) becomes an initializer holding its `test_data_set_0` value, byte for
byte. The test's `output_<i>.pb` stay the expected values, checked against onnxruntime on the
frozen model (`reference` in cases.json).

A test is skipped, with its reason recorded, when it cannot be a deployable model or when bridge
cannot feed it: training ops, random ops, sequence/optional/map types, string tensors, dtypes no
lane or runner takes (bfloat16, float8, 4-bit, complex), zero-size inputs or outputs, a frozen
graph with no float input left (a constant), or a model onnxruntime (bridge's parity reference)
cannot run. `_expanded` tests duplicate their base test through function expansion: they are
listed apart (`expanded` in cases.json) and never counted.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CASES_FILE = HERE / "cases.json"

# Ops whose every float input is data (no operand is a weight): all of them stay graph inputs.
ELEMENTWISE = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Mod", "Equal", "Greater",
                         "GreaterOrEqual", "Less", "LessOrEqual", "Where"})
TRAINING_OPS = frozenset({"Gradient", "Adagrad", "Adam", "Momentum"})
TRAINING_DOMAIN = "ai.onnx.preview.training"
RANDOM_OPS = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Bernoulli",
                        "Multinomial"})

# TensorProto element types (onnx.TensorProto.DataType).
FLOAT_TYPES = frozenset({1, 10, 11})  # FLOAT, FLOAT16, DOUBLE: what bridge feeds as float samples
STRING = 8
EXOTIC = {16: "bfloat16", 17: "float8e4m3fn", 18: "float8e4m3fnuz", 19: "float8e5m2", 20: "float8e5m2fnuz",
          21: "uint4", 22: "int4", 23: "float4e2m1", 24: "float8e8m0", 14: "complex64", 15: "complex128"}
EXPANDED = "_expanded"


@dataclass
class Case:
    """One node test and what became of it. `inputs` stay graph inputs; `frozen` became
    initializers. `reference`: onnxruntime on the frozen model against the test's expected outputs."""

    name: str
    op_types: list[str]
    opset: int
    kept: bool = False
    skip_reason: str = ""
    inputs: list[str] = field(default_factory=list)
    frozen: list[str] = field(default_factory=list)
    declared_opset: int | None = None  # when stored at an opset onnxruntime cannot read
    reference: dict | None = None

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def node_tests_dir() -> Path:
    """The node tests shipped inside the installed onnx package."""
    import onnx

    return Path(onnx.__file__).resolve().parent / "backend" / "test" / "data" / "node"


def test_names(root: Path | None = None) -> list[str]:
    root = root or node_tests_dir()
    return sorted(p.name for p in root.iterdir() if (p / "model.onnx").exists())


def base_of(name: str) -> str | None:
    """`test_x_expanded` and `test_x_expanded_ver18` expand `test_x`: the base test's name."""
    if EXPANDED not in name:
        return None
    return name.partition(EXPANDED)[0]


@dataclass
class NodeTest:
    """A node test as stored: its model, its input TensorProtos (graph input order) and the expected
    outputs. Inputs and outputs that are not tensors (sequences, optionals) are None: only their
    type matters, since such a test is skipped."""

    name: str
    model: object  # onnx.ModelProto
    inputs: list  # onnx.TensorProto or None, one per graph input
    outputs: list  # np.ndarray or None, one per graph output


def load(name: str, root: Path | None = None) -> NodeTest:
    import onnx
    from onnx import numpy_helper

    folder = (root or node_tests_dir()) / name
    model = onnx.load(str(folder / "model.onnx"))
    data = folder / "test_data_set_0"

    def tensor(kind: str, i: int, value):
        if value.type.WhichOneof("value") != "tensor_type":
            return None
        return onnx.load_tensor(str(data / f"{kind}_{i}.pb"))

    inputs = [tensor("input", i, v) for i, v in enumerate(model.graph.input)]
    outputs = [tensor("output", i, v) for i, v in enumerate(model.graph.output)]
    outputs = [None if t is None or _exotic(t.data_type) else numpy_helper.to_array(t) for t in outputs]
    return NodeTest(name, model, inputs, outputs)


def _exotic(elem_type: int) -> bool:
    return elem_type in EXOTIC or elem_type == STRING


def opset_of(model) -> int:
    return next((i.version for i in model.opset_import if i.domain in ("", "ai.onnx")), 0)


def keeps(op_type: str, position: int, elem_type: int) -> bool:
    """The rule: float data stays a graph input, everything else is frozen."""
    return elem_type in FLOAT_TYPES and (position == 0 or op_type in ELEMENTWISE)


def freeze(test: NodeTest):
    """The deployable model: kept inputs stay graph inputs (with the test data's static shape),
    the others become initializers. Returns the model and the kept inputs' data by name."""
    import onnx
    from onnx import numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(test.model)
    graph = model.graph
    node = graph.node[0]
    position = {name: i for i, name in enumerate(node.input) if name}
    kept, feeds = [], {}
    for value, tensor in zip(list(graph.input), test.inputs, strict=True):
        elem = value.type.tensor_type.elem_type
        if keeps(node.op_type, position.get(value.name, -1), elem):
            arr = numpy_helper.to_array(tensor)
            kept.append(onnx.helper.make_tensor_value_info(value.name, elem, list(arr.shape)))
            feeds[value.name] = arr
        else:
            init = onnx.TensorProto()
            init.CopyFrom(tensor)
            init.name = value.name
            graph.initializer.append(init)
    del graph.input[:]
    graph.input.extend(kept)
    return model, feeds


def _io_types(model) -> Iterable[tuple[str, object]]:
    for v in [*model.graph.input, *model.graph.output]:
        yield v.name, v.type


def type_reason(test: NodeTest) -> str:
    """Why this test cannot be a deployable model, from its ops and types alone; '' when it can."""
    model = test.model
    ops = {n.op_type for n in model.graph.node}
    domains = {n.domain for n in model.graph.node}
    if ops & TRAINING_OPS or TRAINING_DOMAIN in domains:
        return "training op"
    if ops & RANDOM_OPS:
        return "random op"
    for name, t in _io_types(model):
        kind = t.WhichOneof("value")
        if kind != "tensor_type":
            return f"{kind.removesuffix('_type')} type ({name})"
        if t.tensor_type.elem_type == STRING:
            return f"string tensor ({name})"
        if t.tensor_type.elem_type in EXOTIC:
            return f"{EXOTIC[t.tensor_type.elem_type]} tensor ({name}): no lane or runner takes it"
    if "Dropout" in ops and _dropout_trains(test):
        return "random op (Dropout in training mode)"
    return ""


def data_reason(test: NodeTest, feeds: dict[str, np.ndarray]) -> str:
    """Why bridge cannot feed or judge the frozen model (`feeds`: its kept inputs); '' when it can."""
    for name, arr in feeds.items():
        if arr.size == 0:
            return f"zero-size input ({name} {list(arr.shape)}): bridge cannot feed it"
    for value, arr in zip(test.model.graph.output, test.outputs, strict=True):
        if arr.size == 0:
            return f"zero-size output ({value.name} {list(arr.shape)}): parity has nothing to compare"
    if not feeds:
        return "no float data input: frozen, the graph is a constant"
    return ""


def _dropout_trains(test: NodeTest) -> bool:
    """Dropout is random only with a true `training_mode` input (its third)."""
    from onnx import numpy_helper

    node = test.model.graph.node[0]
    if len(node.input) < 3 or not node.input[2]:
        return False
    names = [v.name for v in test.model.graph.input]
    return bool(numpy_helper.to_array(test.inputs[names.index(node.input[2])]))


MAX_OPSET = 23  # the newest onnxruntime 1.23 reads


def declare_readable_opset(model) -> int | None:
    """A test stored at an opset newer than onnxruntime reads is declared at `MAX_OPSET` when the
    node is still a valid node of that opset (the checker validates its attributes, inputs and
    types against the older schema): opset 24 changed the ops these tests use only by adding types
    (float8e8m0) and, for Cast and Attention, an attribute or input for them. Returns the opset
    declared, or None when the model is left as stored."""
    import onnx

    if opset_of(model) <= MAX_OPSET:
        return None
    trial = onnx.ModelProto()
    trial.CopyFrom(model)
    for imp in trial.opset_import:
        if imp.domain in ("", "ai.onnx"):
            imp.version = MAX_OPSET
    try:
        onnx.checker.check_model(trial, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError):
        return None
    model.CopyFrom(trial)
    return MAX_OPSET


MAX_IR_VERSION = 11  # what onnxruntime 1.23 reads; bridge lowers newer files the same way


def run_reference(model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """onnxruntime on the frozen model: bridge's own parity reference for ONNX sources."""
    import onnx
    import onnxruntime as ort

    ort.set_default_logger_severity(4)
    readable = onnx.ModelProto()
    readable.CopyFrom(model)
    readable.ir_version = min(model.ir_version, MAX_IR_VERSION)
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    session = ort.InferenceSession(readable.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


AGREE_REL_L2 = {"float16": 1e-3}  # by expected dtype; else 1e-4, bridge's fp32 parity threshold


def agreement(actual: list[np.ndarray], expected: list[np.ndarray]) -> dict:
    """How close onnxruntime's outputs are to the test's: the worst `rel_l2` and `max_abs` over the
    outputs. NaN and Inf must sit where the test has them; integers must be equal. `matches` uses
    bridge's own fp32 threshold: beyond it, onnxruntime would be a wrong reference."""
    worst_rel, worst_abs, matches = 0.0, 0.0, True
    for a, e in zip(actual, expected, strict=True):
        a, e = np.asarray(a), np.asarray(e)
        if a.shape != e.shape:
            return {"matches": False, "rel_l2": None, "max_abs": None,
                    "why": f"shape {list(a.shape)} != {list(e.shape)}"}
        a64, e64 = a.astype(np.float64).ravel(), e.astype(np.float64).ravel()
        finite = np.isfinite(e64)
        matches &= bool(np.array_equal(a64[~finite], e64[~finite], equal_nan=True))
        diff = a64[finite] - e64[finite]
        if not diff.size:
            continue
        norm, err = float(np.linalg.norm(e64[finite])), float(np.linalg.norm(diff))
        rel = err / norm if norm else (0.0 if err == 0 else float("inf"))
        worst_rel, worst_abs = max(worst_rel, rel), max(worst_abs, float(np.max(np.abs(diff))))
        limit = AGREE_REL_L2.get(str(e.dtype), 1e-4) if e.dtype.kind in "fc" else 0.0
        matches &= rel <= limit
    return {"matches": matches, "rel_l2": _finite(worst_rel), "max_abs": _finite(worst_abs)}


def _finite(x: float) -> float | None:
    return float(f"{x:.3g}") if np.isfinite(x) else None


def build(name: str, root: Path | None = None):
    """The frozen model of one test, its kept inputs' data and the expected outputs."""
    test = load(name, root)
    model, feeds = freeze(test)
    declare_readable_opset(model)
    return model, feeds, test.outputs


def classify(name: str, root: Path | None = None) -> Case:
    test = load(name, root)
    model = test.model
    case = Case(name, [n.op_type for n in model.graph.node], opset_of(model))
    case.skip_reason = type_reason(test)
    if case.skip_reason:
        return case
    frozen, feeds = freeze(test)
    case.declared_opset = declare_readable_opset(frozen)
    case.inputs = list(feeds)
    case.frozen = [t.name for t in frozen.graph.initializer if t.name not in feeds]
    case.skip_reason = data_reason(test, feeds)
    if case.skip_reason:
        return case
    try:
        outputs = run_reference(frozen, feeds)
        again = run_reference(frozen, feeds)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own Fail/NotImplemented/... types
        case.skip_reason = f"onnxruntime cannot run it (the parity reference): {_one_line(e)}"
        return case
    if not all(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc") for a, b in zip(outputs, again, strict=True)):
        case.skip_reason = "onnxruntime gives different outputs on two runs of the same inputs: no parity reference"
        return case
    case.reference = agreement(outputs, test.outputs)
    if not case.reference["matches"]:
        case.skip_reason = ("onnxruntime disagrees with the test's expected outputs, so the parity reference "
                            f"would be wrong: rel_l2 {case.reference['rel_l2']}, max_abs {case.reference['max_abs']}")
        return case
    case.kept = True
    return case


def _one_line(e: BaseException, limit: int = 200) -> str:
    return " ".join(str(e).split())[:limit] or type(e).__name__


def expanded_record(name: str, root: Path | None = None) -> dict:
    test_model = load(name, root).model
    ops = sorted({n.op_type for n in test_model.graph.node})
    return {"name": name, "base": base_of(name), "op_types": ops, "opset": opset_of(test_model)}


def collect(root: Path | None = None) -> dict:
    """Every node test, classified: the document written to cases.json."""
    import onnx
    import onnxruntime

    cases, expanded = [], []
    for name in test_names(root):
        if EXPANDED in name:
            expanded.append(expanded_record(name, root))
        else:
            cases.append(classify(name, root).to_json())
    return {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "kept": sum(c["kept"] for c in cases), "skipped": sum(not c["kept"] for c in cases),
            "cases": cases, "expanded": expanded}


def read_cases(path: Path = CASES_FILE) -> list[dict]:
    """The kept cases of a cases.json."""
    return [c for c in json.loads(path.read_text())["cases"] if c["kept"]]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=CASES_FILE)
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    doc = collect()
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    reasons: dict[str, int] = {}
    for c in doc["cases"]:
        if not c["kept"]:
            key = c["skip_reason"].split(":")[0].split(" (")[0]
            reasons[key] = reasons.get(key, 0) + 1
    print(f"{len(doc['cases'])} node tests: {doc['kept']} kept, {doc['skipped']} skipped; "
          f"{len(doc['expanded'])} _expanded variants listed apart")
    for key, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
        print(f"  skipped {n:4d}  {key}")
    declared = [c["name"] for c in doc["cases"] if c["kept"] and c.get("declared_opset")]
    print(f"{len(declared)} kept case(s) stored at an opset onnxruntime cannot read are declared at opset {MAX_OPSET}")


if __name__ == "__main__":
    main()
