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

from bridge.base.registry import Registry


def _load_all() -> None:
    """Import every module in `ops/` once, which registers its converters."""
    from bridge.converters.coreml import ops

    for info in pkgutil.iter_modules(ops.__path__):
        importlib.import_module(f"{ops.__name__}.{info.name}")


CONVERTERS = Registry("Core ML converter for", load=_load_all)
register = CONVERTERS.register


def lookup(op_type: str, opset: int) -> Callable | None:
    entry = CONVERTERS.lookup(op_type, opset)
    return entry.fn if entry else None


def supported_ops() -> set[str]:
    return set(CONVERTERS)
