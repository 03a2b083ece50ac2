"""Rewrites of the Core ML lane's copy of the hub graph, as named passes in a declared order.

They change what the Core ML artifact computes at its interface (the hub and the other lanes never
see them), so each is recorded in the artifact's route.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bridge.converters.onnx.graph import PassRegistry

if TYPE_CHECKING:
    import onnx

_REGISTRY = PassRegistry("coreml")
coreml_pass = _REGISTRY.register


def apply_passes(model: onnx.ModelProto, passes, *args) -> list[str]:
    """Run `passes` in order on `model` in place, each called as `pass(model, *args)`."""
    from bridge.converters.coreml.passes import image_input  # noqa: F401 - registers its pass

    return _REGISTRY.apply(model, passes, *args)
