"""ONNX files as sources: the file itself is the reference the hub graph is checked against.

The file may be hostile. `bridge.base.onnx_files` reads it: every tensor anywhere is checked, and
external bytes are read by us from checked paths into the model, so neither onnxruntime nor
onnxslim ever resolves a location itself. Past protobuf's 2 GB, onnxruntime gets a copy we wrote.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from bridge.base.arrays import Feed
from bridge.base.cpus import onnxruntime_options
from bridge.base.errors import UsageError
from bridge.base.inference import size_bound
from bridge.base.lane import ExportRequest, ExportResult
from bridge.base.lazy import require
from bridge.base.onnx_files import PROTOBUF_LIMIT, load_model
from bridge.base.tensors import TensorSpec, apply_overrides
from bridge.converters.onnx.export import finish

_ONNX_DTYPES = {1: "float32", 10: "float16", 11: "float64", 7: "int64", 6: "int32", 3: "int8",
                2: "uint8", 9: "bool"}


def export_file(req: ExportRequest) -> ExportResult:
    path = req.source.path
    model = load_model(path)
    inits = {t.name for t in model.graph.initializer}
    declared = [v for v in model.graph.input if v.name not in inits]
    ranges = int_ranges(model)
    specs = apply_overrides([replace(_spec(v), int_range=ranges.get(v.name)) for v in declared], req.overrides,
                            req.dynamic)
    _check_dynamic(declared, specs)
    session = _session(model, Path(req.hub_path).parent)
    names = [o.name for o in session.get_outputs()]

    def run(feed: Feed) -> Feed:
        outs = session.run(names, {s.name: feed[s.name] for s in specs})
        return {n: np.asarray(o) for n, o in zip(names, outs, strict=True)}

    return finish(model, req, framework="onnx", inputs=specs, run_source=run, route=("onnx",))


def _spec(value_info) -> TensorSpec:
    t = value_info.type.tensor_type
    shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in t.shape.dim)
    return TensorSpec(value_info.name, shape, _ONNX_DTYPES.get(t.elem_type, "float32"))


_PASS_THROUGH = {"Cast", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Identity", "Expand"}


def int_ranges(model) -> dict[str, tuple[int, int]]:
    """What an ONNX file says about its integer inputs, which has no example to bound them: an
    input used as the indices of a Gather over a constant table (token ids into an embedding,
    through casts and reshapes) stays inside that table, [0, rows); an input named like a mask
    that indexes nothing is all ones (every position attended; 2-9, the default range, means
    nothing to a mask and makes rows that runtimes may legitimately disagree on)."""
    graph = model.graph
    constants = {t.name: tuple(t.dims) for t in graph.initializer}
    constants |= {n.output[0]: tuple(a.t.dims) for n in graph.node if n.op_type == "Constant"
                  for a in n.attribute if a.name == "value"}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    ints = [v.name for v in graph.input if v.name not in constants
            and v.type.tensor_type.elem_type in (6, 7, 2, 3, 12, 13)]  # int32/64, uint8/int8, uint32/64
    out = {}
    for name in ints:
        rows, frontier, seen = [], [name], set()
        while frontier:
            current = frontier.pop()
            for n in consumers.get(current, []):
                if n.op_type == "Gather" and len(n.input) > 1 and n.input[1] == current:
                    axis = next((a.i for a in n.attribute if a.name == "axis"), 0)
                    dims = constants.get(n.input[0])
                    if dims and axis in (0, -len(dims)) and dims[0] > 0:
                        rows.append(dims[0])
                elif n.op_type in _PASS_THROUGH and n.input and n.input[0] == current and n.output[0] not in seen:
                    seen.add(n.output[0])
                    frontier.append(n.output[0])
        if rows:
            out[name] = (0, min(rows))
        elif "mask" in name.lower():
            out[name] = (1, 2)
    return out


def _check_dynamic(declared, specs: list[TensorSpec]) -> None:
    """An axis the file fixes cannot be made dynamic: the graph was built for that one size."""
    for v, spec in zip(declared, specs, strict=True):
        dims = v.type.tensor_type.shape.dim
        for axis in spec.dynamic:
            if axis < len(dims) and dims[axis].HasField("dim_value") and dims[axis].dim_value > 0:
                raise UsageError(f"--dynamic {spec.name}:{axis}: the ONNX file fixes axis {axis} of {spec.name} at "
                                 f"{dims[axis].dim_value}, so its graph runs only that size; export it with that "
                                 "axis dynamic instead")


def _session(model, workdir: Path):
    """onnxruntime on the model as we loaded it (no external reference left to resolve)."""
    ort = require("onnxruntime")
    opts = onnxruntime_options(ort)
    opts.log_severity_level = 3
    if size_bound(model) < PROTOBUF_LIMIT - (64 << 20):
        return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    onnx = require("onnx")
    copy = workdir / "source-copy" / "model.onnx"
    copy.parent.mkdir(exist_ok=True)
    onnx.save(model, str(copy), save_as_external_data=True, all_tensors_to_one_file=True, location="model.data")
    return ort.InferenceSession(str(copy), opts, providers=["CPUExecutionProvider"])
