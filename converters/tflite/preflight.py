"""The ONNX ops the TFLite lane refuses, named all at once before anything converts.

onnx2tf keeps one module per ONNX op type it converts: an op with none cannot convert. Listed
without importing onnx2tf (which imports TensorFlow).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from bridge.base.lane import Unsupported
from bridge.base.lazy import require


def supported_ops() -> set[str]:
    spec = importlib.util.find_spec("onnx2tf")
    if spec is None or not spec.submodule_search_locations:
        return set()
    ops_dir = Path(next(iter(spec.submodule_search_locations))) / "ops"
    return {p.stem for p in ops_dir.glob("*.py") if p.stem[:1].isupper()}


def unsupported(hub_path: str, node_names: dict[str, str], options: object = None) -> list[Unsupported]:
    onnx = require("onnx")
    graph = onnx.load(hub_path, load_external_data=False).graph
    known = supported_ops()
    missing: dict[str, list[str]] = {}
    for node in graph.node:
        if node.op_type not in known:
            missing.setdefault(node.op_type, []).append(node_names.get(node.name, node.name))
    return [Unsupported(op, tuple(nodes), "onnx2tf has no converter for it") for op, nodes in sorted(missing.items())]
