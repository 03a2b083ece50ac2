"""Check the whole graph before converting anything: every op the lane cannot lower, at once.

An op is refused when no converter is registered for it at the model's opset, or when its
converter exists but the node's attributes ask for something it does not lower exactly (see
`limits`): a refused node is named with the reason, never converted into wrong numbers. Graph
inputs Core ML cannot take (an int8 tensor, rank 6) are refused the same way, as `(graph input)`.
"""

from __future__ import annotations

from bridge.base.lane import Unsupported
from bridge.base.lazy import require
from bridge.converters.coreml.limits import NodeFacts, general_limit, graph_facts, input_limit, limit_of
from bridge.converters.coreml.registry import lookup

NO_CONVERTER = "no Core ML converter"
INPUT = "(graph input)"  # the op_type of a refused graph input's record


def refusal(node, opset: int, facts: NodeFacts | None = None) -> str | None:
    """Why the lane refuses this node, or None when it claims it."""
    if lookup(node.op_type, opset) is None:
        return NO_CONVERTER
    facts = facts or NodeFacts(node, opset)
    check = limit_of(node.op_type)
    return (check(facts) if check else None) or general_limit(facts)


def unsupported_ops(model, node_names: dict[str, str] | None = None) -> list[Unsupported]:
    from bridge.converters.onnx.hub import opset_of

    opset = opset_of(model)
    facts = graph_facts(model, opset)
    missing: dict[tuple[str, str], list[str]] = {}
    initializers = {t.name for t in model.graph.initializer}
    for vi in model.graph.input:
        why = None if vi.name in initializers else input_limit(vi)
        if why:
            missing.setdefault((INPUT, why), []).append(vi.name)
    for node in model.graph.node:
        if node.op_type == "Constant":
            continue
        why = refusal(node, opset, facts(node))
        if why:
            missing.setdefault((node.op_type, why), []).append((node_names or {}).get(node.name, node.name))
    return [Unsupported(op, tuple(nodes), why) for (op, why), nodes in sorted(missing.items())]


def unsupported(hub_path: str, node_names: dict[str, str], options: object = None) -> list[Unsupported]:
    """The lane's declared preflight: run in a child, since the registry imports coremltools."""
    onnx = require("onnx")
    return unsupported_ops(onnx.load(hub_path, load_external_data=False), node_names)
