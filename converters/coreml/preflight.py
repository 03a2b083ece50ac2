"""Check the whole graph before converting anything: every op the lane cannot lower, at once."""

from __future__ import annotations

from bridge.base.lane import Unsupported
from bridge.base.lazy import require
from bridge.converters.coreml.registry import lookup


def unsupported_ops(model, node_names: dict[str, str] | None = None) -> list[Unsupported]:
    from bridge.converters.onnx.hub import opset_of

    opset = opset_of(model)
    missing: dict[str, list[str]] = {}
    for node in model.graph.node:
        if node.op_type != "Constant" and lookup(node.op_type, opset) is None:
            missing.setdefault(node.op_type, []).append((node_names or {}).get(node.name, node.name))
    return [Unsupported(op, tuple(nodes)) for op, nodes in sorted(missing.items())]


def unsupported(hub_path: str, node_names: dict[str, str], options: object = None) -> list[Unsupported]:
    """The lane's declared preflight: run in a child, since the registry imports coremltools."""
    onnx = require("onnx")
    return unsupported_ops(onnx.load(hub_path, load_external_data=False), node_names)
