"""Check the whole graph before converting anything: every unsupported op, at once."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.converters.coreml.registry import lookup


@dataclass(frozen=True)
class Unsupported:
    op_type: str
    nodes: tuple[str, ...]

    def __str__(self) -> str:
        shown = ", ".join(self.nodes[:5]) + (f" and {len(self.nodes) - 5} more" if len(self.nodes) > 5 else "")
        return f"{self.op_type} ({shown})"


def unsupported_ops(model, node_names: dict[str, str] | None = None) -> list[Unsupported]:
    from bridge.converters.onnx.hub import opset_of

    opset = opset_of(model)
    missing: dict[str, list[str]] = {}
    for node in model.graph.node:
        if node.op_type != "Constant" and lookup(node.op_type, opset) is None:
            missing.setdefault(node.op_type, []).append((node_names or {}).get(node.name, node.name))
    return [Unsupported(op, tuple(nodes)) for op, nodes in sorted(missing.items())]


def unsupported_in_file(path: str) -> list[dict]:
    """For `bridge inspect`: run in a child, since it imports coremltools."""
    import onnx

    model = onnx.load(path, load_external_data=False)
    return [{"op_type": u.op_type, "nodes": list(u.nodes)} for u in unsupported_ops(model)]
