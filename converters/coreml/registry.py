"""One small registered function per ONNX op type (and opset range).

    @register("Relu")
    def relu(ctx, node):
        ctx.set(node.output[0], mb.relu(x=ctx.var(node.input[0]), name=ctx.name(node)))

`lookup(op_type, opset)` picks the converter with the highest `since` not above the model's opset.
Registering the same op type and `since` twice is an error, so two modules cannot silently fight.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class OpConverter:
    op_type: str
    since: int
    fn: Callable


_REGISTRY: dict[str, list[OpConverter]] = {}


def register(*op_types: str, since: int = 1) -> Callable:
    def wrap(fn: Callable) -> Callable:
        for op_type in op_types:
            entries = _REGISTRY.setdefault(op_type, [])
            if any(e.since == since for e in entries):
                raise ValueError(f"Core ML converter for {op_type} since opset {since} registered twice")
            entries.append(OpConverter(op_type, since, fn))
            entries.sort(key=lambda e: e.since)
        return fn

    return wrap


def lookup(op_type: str, opset: int) -> Callable | None:
    load_all()
    found = None
    for entry in _REGISTRY.get(op_type, ()):
        if entry.since <= opset:
            found = entry.fn
    return found


def supported_ops() -> set[str]:
    load_all()
    return set(_REGISTRY)


_LOADED = False


def load_all() -> None:
    """Import every module in `ops/` once, which registers its converters."""
    global _LOADED
    if _LOADED:
        return
    from bridge.converters.coreml import ops

    for info in pkgutil.iter_modules(ops.__path__):
        importlib.import_module(f"{ops.__name__}.{info.name}")
    _LOADED = True
