"""`bridge inspect`: what a model or artifact contains, and which lanes can take its ops."""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from collections import Counter
from pathlib import Path

from bridge.isolation import Limits, run_stage
from bridge.sources import Format, sniff


def lane_support(op_types: set[str]) -> dict[str, dict]:
    """Per lane that can tell from op types alone: the ONNX artifact is the hub, so it takes every op.
    The TFLite and Core ML lanes decide per node, in their preflights (`_with_preflights`)."""
    return {"onnx": {"supported": True, "unsupported_ops": []}}


def describe_onnx(path: str) -> dict:
    from bridge.lazy import require

    onnx = require("onnx")
    model = onnx.load(path, load_external_data=False)
    inits = {t.name for t in model.graph.initializer}

    def tensor(v) -> dict:
        t = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
        return {"name": v.name, "shape": dims, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name}

    ops = Counter(n.op_type for n in model.graph.node)
    return {
        "format": "onnx",
        "opset": {i.domain or "ai.onnx": i.version for i in model.opset_import},
        "inputs": [tensor(v) for v in model.graph.input if v.name not in inits],
        "outputs": [tensor(v) for v in model.graph.output],
        "ops": dict(sorted(ops.items())),
        "lanes": lane_support(set(ops)),
    }


def _with_preflights(desc: dict, onnx_path: str, limits: Limits) -> dict:
    """TFLite and Core ML support come from each lane's preflight, which imports its converter: ask
    a child for each. TFLite's names the reason for every refused node (an op without a builtin
    lowering, or an attribute combination the lane refuses)."""
    if importlib.util.find_spec("onnx2tf") is None:
        desc["lanes"]["tflite"] = {"supported": False, "unsupported_ops": [], "reason": "onnx2tf not installed"}
    else:
        refused = run_stage("tflite-preflight", "bridge.converters.tflite.preflight:refused_in_file", onnx_path,
                            limits=limits)
        desc["lanes"]["tflite"] = {"supported": not refused,
                                   "unsupported_ops": sorted({r["op_type"] for r in refused}),
                                   "refused": refused}
    if importlib.util.find_spec("coremltools") is None:
        desc["lanes"]["coreml"] = {"supported": False, "unsupported_ops": [], "reason": "coremltools not installed"}
        return desc
    missing = run_stage("coreml-preflight", "bridge.converters.coreml.preflight:unsupported_in_file", onnx_path,
                        limits=limits)
    desc["lanes"]["coreml"] = {"supported": not missing, "unsupported_ops": [m["op_type"] for m in missing],
                               "nodes": {m["op_type"]: m["nodes"] for m in missing}}
    return desc


def inspect(target: str, *, trust_code: bool = False, inputs: tuple = ()) -> dict:
    ref = sniff(target)
    limits = Limits(timeout=1800)
    if ref.format is Format.ONNX:
        return _with_preflights(describe_onnx(str(ref.path)), str(ref.path), limits)
    if ref.format is Format.TFLITE:
        desc = run_stage("tflite-inspect", "bridge.validators.runners.tflite:describe", str(ref.path), limits=limits)
        return {"format": "tflite", **desc}
    if ref.format is Format.MLPACKAGE:
        desc = run_stage("coreml-inspect", "bridge.validators.runners.coreml:describe", str(ref.path), limits=limits)
        return {"format": "mlpackage", **desc}
    from bridge.converters.onnx.export import ExportRequest
    from bridge.tensors import parse_input

    work = Path(tempfile.mkdtemp(prefix="bridge-inspect-"))
    try:
        exported = run_stage("export", "bridge.converters.onnx.export:export_source",
                             ExportRequest(ref, str(work / "hub.onnx"), tuple(parse_input(t) for t in inputs),
                                           samples=1, trust_code=trust_code), limits=limits)
        desc = _with_preflights(describe_onnx(exported.hub_path), exported.hub_path, limits)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {**desc, "format": str(ref.format), "framework": exported.framework, "hub_opset": desc.pop("opset")}
