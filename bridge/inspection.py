"""`bridge inspect`: what a model or artifact contains, and which ops each lane refuses, before
anything converts. Each lane's answer comes from its own declared preflight, run in a child."""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from collections import Counter
from pathlib import Path

from bridge.base.errors import BridgeError, UnsafeInput, UsageError
from bridge.base.lane import ExportRequest, Lane
from bridge.base.sources import Format, sniff
from bridge.base.tensors import parse_input
from bridge.lanes import lanes
from bridge.options import DEFAULT_TIMEOUT
from bridge.stages import Limits, Stage, run_stage

EXPORT = Stage("export", "bridge.converters.onnx.export:export_source")


def lane_support(onnx_path: str, node_names: dict[str, str], limits: Limits) -> dict[str, dict]:
    """Per lane: the ops of the graph it refuses (none when it declares no preflight)."""
    out = {}
    for lane in lanes().values():
        missing_backends = [m for m in lane.requires if importlib.util.find_spec(m) is None]
        if missing_backends:
            out[lane.name] = {"supported": False, "unsupported_ops": [],
                              "reason": f"{', '.join(missing_backends)} not installed; pip install "
                                        f"\"bridge-convert[{lane.extra}]\""}
            continue
        preflight = lane.inspect_preflight or lane.preflight
        if preflight is None:
            out[lane.name] = {"supported": True, "unsupported_ops": []}
            continue
        stage = Stage(f"{lane.name}-preflight", "bridge.lanes:call", lane.convert_blocks)
        try:
            missing = run_stage(stage, preflight, onnx_path, node_names, lane.make_options(), limits=limits)
        except BridgeError as e:
            out[lane.name] = {"supported": False, "unsupported_ops": [], "reason": str(e)}
            continue
        out[lane.name] = {"supported": not missing, "unsupported_ops": list(dict.fromkeys(u.op_type for u in missing))}
        if missing:
            out[lane.name].update(refusals(missing))
    return out


def refusals(missing) -> dict[str, dict[str, object]]:
    """`nodes` (op type -> its refused nodes) and `reasons` (op type -> why), the one shape every
    lane's refusals take in `bridge inspect --json`. One op type may be refused for several reasons
    (attribute values): then each reason names its nodes, so no node loses its reason."""
    nodes: dict[str, list[str]] = {}
    reasons: dict[str, list] = {}
    for u in missing:
        nodes.setdefault(u.op_type, []).extend(u.nodes)
        if u.reason:
            reasons.setdefault(u.op_type, []).append(u)
    said = {op: "; ".join(us[0].reason if len(us) == 1 else f"{u.reason} ({', '.join(u.nodes)})" for u in us)
            for op, us in reasons.items()}
    return {"nodes": nodes, "reasons": said}


def describe_onnx(path: str) -> dict:
    from bridge.base.lazy import require

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
    }


def _artifact_lane(path: Path) -> Lane | None:
    for lane in lanes().values():
        if not lane.in_process and lane.recognize is not None and lane.recognize(path):
            return lane
    return None


def inspect(target: str, *, trust_code: bool = False, inputs: tuple = ()) -> dict:
    limits = Limits(timeout=DEFAULT_TIMEOUT)
    try:
        ref = sniff(target)
    except UnsafeInput:
        raise
    except UsageError:  # maybe an artifact only a plug-in lane knows
        lane = _artifact_lane(Path(target))
        if lane is None:
            raise
        ref = None
    lane = _artifact_lane(ref.path) if ref is not None and ref.path is not None else lane
    if lane is not None and lane.describe:
        desc = run_stage(Stage(f"{lane.name}-inspect", "bridge.lanes:call", lane.runtime_blocks), lane.describe,
                         target, limits=limits)
        return {"format": lane.suffix.lstrip("."), **desc}
    if ref.format is Format.ONNX:
        return {**describe_onnx(str(ref.path)), "lanes": lane_support(str(ref.path), {}, limits)}
    work = Path(tempfile.mkdtemp(prefix="bridge-inspect-"))
    try:
        exported = run_stage(EXPORT, ExportRequest(ref, str(work / "hub.onnx"), tuple(parse_input(t) for t in inputs),
                                                   samples=1, trust_code=trust_code), limits=limits)
        desc = describe_onnx(exported.hub_path)
        desc["lanes"] = lane_support(exported.hub_path, exported.node_names, limits)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {**desc, "format": str(ref.format), "framework": exported.framework, "hub_opset": desc.pop("opset")}
