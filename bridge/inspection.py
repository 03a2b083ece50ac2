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
    """Per lane: the model's ops it has converters for, and those it lacks."""
    known = {"onnx": None, "tflite": _onnx2tf_ops()}
    out = {}
    for lane, ops in known.items():
        if ops is None:
            out[lane] = {"supported": True, "unsupported_ops": []}
        else:
            missing = sorted(op_types - ops)
            out[lane] = {"supported": not missing, "unsupported_ops": missing}
    return out


def _onnx2tf_ops() -> set[str]:
    """onnx2tf keeps one module per ONNX op type: list them without importing TensorFlow."""
    spec = importlib.util.find_spec("onnx2tf")
    if spec is None or not spec.submodule_search_locations:
        return set()
    ops_dir = Path(next(iter(spec.submodule_search_locations))) / "ops"
    return {p.stem for p in ops_dir.glob("*.py") if p.stem[:1].isupper()}


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


def _with_coreml(desc: dict, onnx_path: str, limits: Limits) -> dict:
    """Core ML support comes from our converter registry, which imports coremltools: ask a child."""
    if importlib.util.find_spec("coremltools") is None:
        desc["lanes"]["coreml"] = {"supported": False, "unsupported_ops": [], "reason": "coremltools not installed"}
        return desc
    missing = run_stage("coreml-preflight", "bridge.converters.coreml.preflight:unsupported_in_file", onnx_path,
                        limits=limits)
    nodes: dict[str, list[str]] = {}
    for m in missing:
        nodes.setdefault(m["op_type"], []).extend(m["nodes"])
    # `refused`: each op type (or graph input) with the reason and the nodes it covers, as the
    # preflight found them: an op with a converter can still be refused for some attribute values
    desc["lanes"]["coreml"] = {"supported": not missing, "unsupported_ops": sorted(nodes), "nodes": nodes,
                               "refused": missing}
    return desc


def inspect(target: str, *, trust_code: bool = False, inputs: tuple = ()) -> dict:
    ref = sniff(target)
    limits = Limits(timeout=1800)
    if ref.format is Format.ONNX:
        return _with_coreml(describe_onnx(str(ref.path)), str(ref.path), limits)
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
        desc = _with_coreml(describe_onnx(exported.hub_path), exported.hub_path, limits)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {**desc, "format": str(ref.format), "framework": exported.framework, "hub_opset": desc.pop("opset")}
