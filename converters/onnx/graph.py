"""What every ONNX graph pass shares: a registry of named passes run in a declared order, small
node and shape helpers, and the one home of pooling/convolution window geometry. The hub's passes
(`converters/onnx/passes.py`) and the TFLite lane's rewrites (`converters/tflite/rewrites.py`) are
both pipelines of this kind."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bridge.base.inference import infer
from bridge.base.lazy import require
from bridge.base.registry import Registry

if TYPE_CHECKING:
    import onnx

Pass = Callable[..., int]  # (model, *lane options) -> how many nodes it rewrote


class PassRegistry(Registry):
    """Named passes; `apply` runs a pipeline in order, in place."""

    def apply(self, model: onnx.ModelProto, passes: Iterable[str], *args) -> list[str]:
        """Returns e.g. `["maxpool-dilations x2"]` for the passes that changed something. `args` go
        to every pass after the model (a lane's options)."""
        passes = list(passes)
        unknown = [p for p in passes if p not in self]
        if unknown:
            raise ValueError(f"unknown {self.kind} passes: {', '.join(unknown)}")
        applied = []
        for name in passes:
            count = self[name](model, *args)
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
    graph = infer(model).graph
    types = {}
    for value in (*graph.input, *graph.value_info, *graph.output):
        tensor = value.type.tensor_type
        if tensor.HasField("shape"):
            types[value.name] = (tensor.elem_type, tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0
                                                         else None for d in tensor.shape.dim))
    return types


@dataclass(frozen=True)
class Window:
    """One pooling or convolution node's sliding window per spatial axis, pads as written
    (auto_pad not applied)."""

    size: tuple[int, ...]  # the input's spatial dims
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    begin: tuple[int, ...]
    end: tuple[int, ...]


def window(node, shapes: dict[str, tuple[int, ...]]) -> Window | None:
    """The node's window, or None when its input's spatial shape is not static."""
    size = shapes.get(node.input[0])
    kernel = get_attr(node, "kernel_shape", None)
    if kernel is None and node.op_type == "Conv" and len(node.input) > 1:
        kernel = shapes.get(node.input[1])  # Conv may leave kernel_shape to its weight's shape
    if size is None or kernel is None or len(kernel) != len(size):
        return None
    rank = len(size)
    pads = get_attr(node, "pads", None) or [0] * 2 * rank
    return Window(tuple(size), tuple(kernel), tuple(get_attr(node, "strides", None) or [1] * rank),
                  tuple(get_attr(node, "dilations", None) or [1] * rank), tuple(pads[:rank]), tuple(pads[rank:]))


def spatial_shapes(model) -> dict[str, tuple[int, ...]]:
    """Tensor name -> its dims after batch and channels, for tensors whose dims there are all known
    (initializers too: a Conv weight's kernel). Batch and channels may stay symbolic."""
    graph = infer(model).graph
    shapes = {t.name: tuple(t.dims[2:]) for t in graph.initializer if len(t.dims) >= 3}
    for value in (*graph.input, *graph.value_info, *graph.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims) >= 3 and all(d.HasField("dim_value") and d.dim_value > 0 for d in dims[2:]):
            shapes[value.name] = tuple(d.dim_value for d in dims[2:])
    return shapes


def pooled_size(n: int, k: int, s: int, begin: int, end: int, *, ceil: bool, dilation: int = 1) -> int:
    """Output length along one axis as onnxruntime and PyTorch count it: floor or ceil of the
    window positions over the padded input, except that in ceil mode a last window that would start
    in the end padding is dropped."""
    room = n + begin + end - ((k - 1) * dilation + 1)
    out = (-(-room // s) if ceil else room // s) + 1
    return out - 1 if ceil and (out - 1) * s >= n + begin else out


def ceil_out_size(n: int, k: int, s: int, begin: int, end: int) -> int | None:
    """Output length along one axis in ceil mode; None where runtimes disagree on it.

    onnxruntime (like PyTorch) drops a last window that would start in the end padding, while ONNX
    shape inference keeps it; a window larger than the padded input is an error in some runtimes
    and an empty output in others.
    """
    span = n + begin + end - k
    if span < 0:
        return None
    out = -(-span // s) + 1
    return out if pooled_size(n, k, s, begin, end, ceil=True) == out else None


def named_layers(names: str | None, model, node_names: dict[str, str], flag: str, stage: str) -> dict[str, str]:
    """The layers a comma-separated option names, as {hub node name: the user's name}, in graph
    order. A name is the source's (what reports and `bridge inspect` show; `node_names` maps hub
    names to them) or the hub's; any unknown one is refused, all at once."""
    from bridge.base.errors import ConversionError

    wanted = [n.strip() for n in (names or "").split(",") if n.strip()]
    hub = [node.name for node in model.graph.node]
    by_name = {**{n: n for n in hub}, **{node_names[n]: n for n in hub if n in node_names}}
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        raise ConversionError(f"{flag}: no layer named {', '.join(unknown)} in the model", stage=stage)
    chosen = {by_name[n] for n in wanted}
    return {n: node_names.get(n, n) for n in hub if n in chosen}
