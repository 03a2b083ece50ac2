"""ONNX files as sources: the file itself is the reference the hub graph is checked against.

External data is read by path, never through one serialized protobuf (protobuf stops at 2 GB):
onnxruntime gets the graph without its weights plus the folder they live in, and the weights are
loaded into the hub model only afterwards. `sniff` has already checked every external-data
location; it is checked again here, right before the first read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bridge.converters.base import ExportResult, Feed
from bridge.converters.onnx.export import ExportRequest, finish
from bridge.lazy import require
from bridge.sources import check_external_data
from bridge.tensors import TensorSpec, apply_overrides

MAX_IR_VERSION = 11  # the newest onnxruntime 1.23 reads

_ONNX_DTYPES = {1: "float32", 10: "float16", 11: "float64", 7: "int64", 6: "int32", 3: "int8",
                2: "uint8", 9: "bool"}


def export_file(req: ExportRequest) -> ExportResult:
    onnx = require("onnx")
    path = req.source.path
    model = onnx.load(str(path), load_external_data=False)
    check_external_data(path, model)
    if model.ir_version > MAX_IR_VERSION:
        # onnx 1.19's helpers stamp IR 12 on every model; onnxruntime 1.23 reads up to 11, and
        # nothing IR 12 adds is in an opset <= 21 graph.
        model.ir_version = MAX_IR_VERSION
    inits = {t.name for t in model.graph.initializer}
    specs = [_spec(v) for v in model.graph.input if v.name not in inits]
    specs = apply_overrides(specs, req.overrides, req.dynamic)
    session = _session(model, path.parent)
    names = [o.name for o in session.get_outputs()]
    onnx.load_external_data_for_model(model, str(path.parent))

    def run(feed: Feed) -> Feed:
        outs = session.run(names, {s.name: feed[s.name] for s in specs})
        return {n: np.asarray(o) for n, o in zip(names, outs, strict=True)}

    return finish(model, req, framework="onnx", inputs=specs, run_source=run, route=("onnx",))


def _spec(value_info) -> TensorSpec:
    t = value_info.type.tensor_type
    shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in t.shape.dim)
    return TensorSpec(value_info.name, shape, _ONNX_DTYPES.get(t.elem_type, "float32"))


def _session(model, folder: Path):
    """From the graph with its external tensors still references: onnxruntime reads them from
    `folder` itself (relative to the working directory otherwise)."""
    ort = require("onnxruntime")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.model_external_initializers_file_folder_path", str(folder))
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
