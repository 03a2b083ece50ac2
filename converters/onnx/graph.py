"""What every ONNX graph pass shares: a registry of named passes run in a declared order, and
small node and shape helpers. The hub's passes (`converters/onnx/passes.py`) and the TFLite lane's
rewrites (`converters/tflite/rewrites.py`) are both pipelines of this kind."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from bridge.lazy import require

if TYPE_CHECKING:
    import onnx

Pass = Callable[..., int]  # (model, *lane options) -> how many nodes it rewrote


class PassRegistry:
    """Named passes; `apply` runs a pipeline in order, in place."""

    def __init__(self, kind: str):
        self.kind = kind
        self._passes: dict[str, Pass] = {}

    def register(self, name: str) -> Callable[[Pass], Pass]:
        def wrap(fn: Pass) -> Pass:
            if name in self._passes:
                raise ValueError(f"{self.kind} pass {name!r} is already registered")
            self._passes[name] = fn
            return fn

        return wrap

    def apply(self, model: onnx.ModelProto, passes: Iterable[str], *args) -> list[str]:
        """Returns e.g. `["maxpool-dilations x2"]` for the passes that changed something. `args` go
        to every pass after the model (a lane's options)."""
        passes = list(passes)
        unknown = [p for p in passes if p not in self._passes]
        if unknown:
            raise ValueError(f"unknown {self.kind} passes: {', '.join(unknown)}")
        applied = []
        for name in passes:
            count = self._passes[name](model, *args)
            if count:
                applied.append(f"{name} x{count}")
        return applied


def fresh_name(model, base: str) -> str:
    """A tensor/node name nothing in the graph uses yet (TensorFlow-safe as long as `base` is)."""
    graph = model.graph
    taken = {t.name for t in graph.initializer} | {v.name for v in (*graph.input, *graph.output)}
    taken |= {name for n in graph.node for name in (n.name, *n.input, *n.output)}
    name, i = base, 1
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    return name


def get_attr(node, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return require("onnx").helper.get_attribute_value(a)
    return default


def set_attr(node, name: str, value) -> None:
    del_attr(node, name)
    node.attribute.append(require("onnx").helper.make_attribute(name, value))


def del_attr(node, name: str) -> None:
    for a in list(node.attribute):
        if a.name == name:
            node.attribute.remove(a)


def tensor_types(model) -> dict[str, tuple[int, tuple[int | None, ...]]]:
    """Tensor name -> (element type, shape) as shape inference sees them; None for a dim it cannot
    pin down."""
    onnx = require("onnx")
    graph = onnx.shape_inference.infer_shapes(model).graph
    types = {}
    for value in (*graph.input, *graph.value_info, *graph.output):
        tensor = value.type.tensor_type
        if tensor.HasField("shape"):
            types[value.name] = (tensor.elem_type, tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0
                                                         else None for d in tensor.shape.dim))
    return types
