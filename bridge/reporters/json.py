"""report.json: the versioned JSON document (`Report.to_json`), written atomically, and read back
in the current version's shape whatever version wrote it.

A team that stores reports reads them years later, and `--out` ownership reads the report an
earlier run left (it may predate version 2), so `read` upgrades version 1 documents. The upgrade
moves what version 2 moved and fills what version 1 never recorded with null (the command line,
the timestamp) rather than guessing it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from bridge.base.files import write_atomic
from bridge.base.samples import SYNTHETIC_CALIBRATION
from bridge.base.tensors import dtype_name
from bridge.report import SCHEMA, SCHEMA_V1, Report

HUB_STAGE = "source->onnx"  # v1 repeated it in every artifact; v2 holds it once, as `hub`


class JsonReporter:
    def write(self, report: Report, path: Path) -> None:
        write_atomic(path, render(report.to_json()))
        report.path = report.written["report"] = path


def render(doc: dict) -> bytes:
    return (json.dumps(doc, indent=2, allow_nan=False) + "\n").encode()


def read(path: Path) -> dict:
    """A stored report in version 2's shape. Raises `ValueError` (`json.JSONDecodeError` included)
    for a file that is not a bridge report of a version this bridge knows, `OSError` for one it
    cannot read."""
    return upgrade(json.loads(Path(path).read_text()))


def upgrade(doc: object) -> dict:
    if not isinstance(doc, dict):
        raise ValueError("not a bridge report (not a JSON object)")
    schema = doc.get("schema")
    if schema == SCHEMA:
        return doc
    if schema == SCHEMA_V1:
        return upgrade_v1(doc)
    raise ValueError(f"not a bridge report this version reads (schema {schema!r}; reads {SCHEMA_V1}, {SCHEMA})")


def upgrade_v1(doc: dict) -> dict:
    """A `bridge.report/1` document as version 2 would have written it, from what v1 recorded."""
    env = dict(doc.get("environment") or {})
    options = env.get("options") or {}
    seeds = env.pop("seeds", None) or {}
    calibration = env.pop("calibration", None)
    source = dict(doc.get("source") or {})
    source.setdefault("name", _model_name(str(source.get("path", ""))))
    opset = source.pop("onnx_opset", None)
    folding = source.pop("hub", None)  # v1 as issue 11's branch wrote it: what the hub folded
    artifacts = [_artifact_v1(a) for a in doc.get("artifacts") or [] if isinstance(a, dict)]
    hub_outputs = next((a["_hub"] for a in artifacts if a.get("_hub") is not None), None)
    for a in artifacts:
        a.pop("_hub", None)
    samples = {"parity": _parity_samples_v1(doc, seeds, artifacts)}
    if calibration is not None and any((a.get("parity") or {}).get("calibration") for a in artifacts):
        samples["calibration"] = _origin_v1(str(calibration), seeds.get("calibration"))
    for a in artifacts:
        parity = a.get("parity")
        if parity is not None:
            parity["inputs"] = samples["parity"]["origin"] if parity.get("status") != "not_executed" else None
            if parity.get("calibration"):
                parity["calibration"] = samples.get("calibration", {}).get("origin", "user")
    hub = None if opset is None else {"route": [], "opset": opset,
                                      "runtime": "onnxruntime" if hub_outputs else None, "outputs": hub_outputs}
    if hub is not None and isinstance(folding, dict):
        hub["folding"] = folding
    return {
        "schema": SCHEMA, "upgraded_from": SCHEMA_V1,
        "command": "convert" if "targets" in options else "validate",
        "passed": doc.get("passed"), "exit_code": doc.get("exit_code"),
        "created": None, "seconds": None,
        "bridge_version": (env.get("versions") or {}).get("bridge-convert"),
        "command_line": None, "source": source,
        "hub": hub,
        "samples": samples, "warnings": list(doc.get("warnings") or []), "artifacts": artifacts, "environment": env,
    }


def _artifact_v1(a: dict) -> dict:
    a = dict(a)
    if isinstance(a.get("io"), dict):
        a["io"] = {side: [{**t, "dtype": dtype_name(t["dtype"])} if isinstance(t, dict) and "dtype" in t else t
                          for t in a["io"].get(side) or []] for side in ("inputs", "outputs")}
    parity = a.get("parity")
    if isinstance(parity, dict):
        parity = a["parity"] = dict(parity)
        stages = dict(parity.get("stages") or {})
        a["_hub"] = stages.pop(HUB_STAGE, None)
        if stages:
            parity["stages"] = stages
        else:
            parity.pop("stages", None)
        culprit = re.search(r"\(error introduced at ([^)]+)\)", parity.get("reason") or "")
        if culprit:
            parity["introduced_at"] = culprit.group(1)
        parity.setdefault("seconds", None)
    return a


def _parity_samples_v1(doc: dict, seeds: dict, artifacts: list[dict]) -> dict:
    """v1 said where parity samples came from only in a warning."""
    count = next((a["parity"]["samples"] for a in artifacts if (a.get("parity") or {}).get("samples")), 0)
    for w in doc.get("warnings") or []:
        held = re.fullmatch(r"parity runs on (\d+) samples held out of (.+)", str(w))
        if held:
            return {"origin": "calibration", "count": int(held.group(1)), "path": held.group(2)}
    return {"origin": "synthetic", "count": count, "seed": seeds.get("parity", 0)}


def _origin_v1(text: str, seed: int | None) -> dict:
    synthetic = re.fullmatch(r"synthetic \(seed (\d+)\)", text)
    if synthetic:
        return {"origin": "synthetic", "count": SYNTHETIC_CALIBRATION, "seed": int(synthetic.group(1))}
    user = re.fullmatch(r"(.+) \((\d+) samples\)", text)
    if user:
        return {"origin": "user", "count": int(user.group(2)), "path": user.group(1)}
    return {"origin": "user", "count": 0, "path": text}


def _model_name(source: str) -> str:
    """v1 did not record the model's short name: `samples/shapes_cnn.py:load` -> shapes_cnn,
    `pkg.models:make` -> models, `model.onnx` -> model (as `SourceRef.name` makes it)."""
    target = source.rsplit(":", 1)[0] if re.search(r":[A-Za-z_][A-Za-z0-9_.]*$", source) else source
    tail = re.split(r"[\\/]", target.rstrip("/\\"))[-1]
    if "/" not in target and not re.search(r"\.(py|onnx|pt2?|pth|keras|h5|tflite)$", tail) and "." in tail:
        return tail.rsplit(".", 1)[-1]  # a module path
    return tail.split(".")[0] or "model"
