"""Average and max pooling, windowed and global.

ceil_mode follows onnxruntime and torch on sizes: a window that would start past the input and its
leading padding is dropped. Where the ceiled windows overrun the padded input, the overrun counts
neither towards a max nor towards an average's divisor (the ONNX spec, its reference evaluator and
torch agree; onnxruntime 1.23 alone counts it when count_include_pad=1). MIL's padding does exactly
that when averages exclude padding, so we lengthen the end padding instead of asking for ceil_mode;
only averages that count padding need MIL's own ceil_mode (1-D/2-D, symmetric pads).
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil import types
from coremltools.converters.mil.mil.types.symbolic import any_symbolic, is_symbolic

from bridge.converters.coreml.context import attrs
from bridge.converters.coreml.ops.conv import interleave, pad_args
from bridge.converters.coreml.registry import register
from bridge.converters.onnx.graph import Window, pooled_size, window


@register("MaxPool")
def max_pool(ctx, node):
    a = attrs(node)
    indices = len(node.output) > 1 and bool(node.output[1])
    if indices or _dilated(a):
        return _by_slices(ctx, node, "max", indices)
    x, kwargs, _ = _window(ctx, node, counts_padding=False)
    if kwargs is None:
        return _by_slices(ctx, node, "max")
    ctx.set(node.output[0], mb.max_pool(x=x, name=ctx.name(node), **kwargs))


@register("AveragePool")
def avg_pool(ctx, node):
    a = attrs(node)
    if _dilated(a):
        return _by_slices(ctx, node, "avg")
    x, kwargs, counts = _window(ctx, node, counts_padding=bool(a.get("count_include_pad", 0)))
    if kwargs is None:  # MIL has no such ceil_mode: the exact window-by-window form
        return _by_slices(ctx, node, "avg")
    ctx.set(node.output[0], mb.avg_pool(x=x, exclude_padding_from_average=not counts, name=ctx.name(node), **kwargs))


@register("LpPool", since=11)
def lp_pool(ctx, node):
    """(sum over the window of |x|^p)^(1/p), window by window (padding adds zeros)."""
    _by_slices(ctx, node, "lp")


def _dilated(a: dict) -> bool:
    return any(d != 1 for d in a.get("dilations", [1] * len(a["kernel_shape"])))


def _window(ctx, node, counts_padding: bool):
    """The input, MIL's window arguments (None when MIL's pooling cannot express them), and whether
    the average must count padding."""
    a = attrs(node)
    kernel = a["kernel_shape"]
    rank = len(kernel)
    x = ctx.var(node.input[0])
    strides = a.get("strides", [1] * rank)
    if a.get("auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER"):
        # SAME fixes the output size at ceil(in / stride): ceil_mode is moot
        kwargs = pad_args(a, x.shape[2:], kernel, strides, [1] * rank)
    else:
        kwargs, counts_padding = _padding(ctx, node, a, x.shape[2:], kernel, strides, counts_padding)
        if kwargs is None:
            return x, None, counts_padding
    return x, {"kernel_sizes": kernel, "strides": strides, **kwargs}, counts_padding


def _padding(ctx, node, a: dict, in_dims, kernel, strides, counts_padding: bool) -> tuple[dict, bool]:
    """Explicit MIL padding reproducing ONNX's pads and ceil_mode, and whether the average must count
    padding: not when ONNX's pads are zero, where the divisor is the count of input elements either
    way, so the padding we add for the overrun must be left out."""
    rank = len(kernel)
    pads = a.get("pads", [0] * 2 * rank) if a.get("auto_pad", "NOTSET") == "NOTSET" else [0] * 2 * rank
    begin, end = list(pads[:rank]), list(pads[rank:])
    as_given = {"pad_type": "custom", "pad": interleave(begin, end)}
    if not a.get("ceil_mode", 0):
        return as_given, counts_padding
    if not any_symbolic(in_dims):
        overrun = [overrun_of(*args) for args in zip(in_dims, kernel, strides, begin, end, strict=True)]
        if all(r <= 0 for r in overrun):  # ceiling changed nothing
            return as_given, counts_padding
        if not counts_padding or not any(pads):
            grown = [e + max(r, 0) for e, r in zip(end, overrun, strict=True)]
            return {"pad_type": "custom", "pad": interleave(begin, grown)}, False
    # MIL's own ceil_mode, for unknown sizes and for averages counting padding. Its rule drops a
    # window starting past the input only on padded axes, ONNX's on all: they differ only where
    # an unpadded axis has kernel < stride.
    same_rule = all(b + e > 0 or k >= s for b, e, k, s in zip(begin, end, kernel, strides, strict=True))
    if rank > 2 or begin != end or not same_rule:
        if any_symbolic(in_dims):
            raise ctx.unsupported(node, "this ceil_mode needs MIL's, which takes 1-D or 2-D pooling with symmetric "
                                        "pads (and kernel >= stride on unpadded axes), or static spatial sizes")
        return None, counts_padding
    return {**as_given, "ceil_mode": True}, counts_padding


def overrun_of(size: int, kernel: int, stride: int, begin: int, end: int) -> int:
    """How far ceil_mode's last window reaches past the padded input (output sizes as onnxruntime
    and torch count them, `pooled_size`)."""
    out = pooled_size(size, kernel, stride, begin, end, ceil=True)
    return (out - 1) * stride + kernel - (size + begin + end)


# window by window ---------------------------------------------------------------------------------
MAX_WINDOW = 1024  # kernel elements unrolled into slices
SAME_DILATED = ("auto_pad=SAME_* with dilations (onnxruntime pads for the undilated kernel, the ONNX spec for "
                "the dilated one: no agreed output)")


@dataclass(frozen=True)
class Axis:
    """One spatial axis of a pooling window, as ONNX defines it."""

    size: int
    kernel: int
    stride: int
    dilation: int
    begin: int  # padding before the input
    end: int  # padding after it, as declared (what count_include_pad counts)
    out: int

    def reach(self) -> int:
        """How far the last window reaches into the padded input: the padding actually needed."""
        return (self.out - 1) * self.stride + (self.kernel - 1) * self.dilation + 1

    def taps(self) -> np.ndarray:
        """(out, kernel) input positions each window reads (negative or >= size: padding)."""
        o, k = np.arange(self.out)[:, None], np.arange(self.kernel)[None, :]
        return o * self.stride - self.begin + k * self.dilation

    def counted(self, padding: bool) -> np.ndarray:
        """Per output, the positions an average divides by: the input's, plus the declared
        padding's when `padding` (ceil_mode's overrun never counts)."""
        taps = self.taps()
        lo, hi = (-self.begin, self.size + self.end) if padding else (0, self.size)
        return ((taps >= lo) & (taps < hi)).sum(axis=1)


def window_axes(w: Window, auto_pad: str, ceil: bool) -> list[Axis]:
    """ONNX's output sizes and padding for a static window (the hub's geometry, `Window`): explicit
    pads with floor or ceil, SAME_* and VALID."""
    axes = []
    for n, k, s, d, b, e in zip(w.size, w.kernel, w.strides, w.dilations, w.begin, w.end, strict=True):
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            out = -(-n // s)
            total = max(0, (out - 1) * s + (k - 1) * d + 1 - n)
            begin = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
            axes.append(Axis(n, k, s, d, begin, total - begin, out))
            continue
        b, e = (b, e) if auto_pad == "NOTSET" else (0, 0)
        axes.append(Axis(n, k, s, d, b, e, pooled_size(n, k, s, b, e, ceil=ceil, dilation=d)))
    return axes


def _by_slices(ctx, node, kind: str, indices: bool = False):
    """Pooling as one strided slice of the padded input per kernel offset, combined with maximum
    or add: exact for what MIL's pooling ops cannot express (dilations, ceil_mode variants, the
    argmax Indices output, whose candidates are constant index tables sliced the same way)."""
    a = attrs(node)
    x = ctx.var(node.input[0])
    dims = [None if is_symbolic(d) else int(d) for d in x.shape]
    if None in dims[2:] or (indices and None in dims[:2]):
        raise ctx.unsupported(node, "dilations, this ceil_mode and the Indices output need static sizes")
    if _dilated(a) and a.get("auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER"):
        raise ctx.unsupported(node, SAME_DILATED)
    axes = window_axes(window(node, {node.input[0]: tuple(dims[2:])}), a.get("auto_pad", "NOTSET"),
                       bool(a.get("ceil_mode", 0)))
    if int(np.prod(a["kernel_shape"])) > MAX_WINDOW:
        raise ctx.unsupported(node, f"a window of over {MAX_WINDOW} elements is too large to unroll")
    dtype = types.nptype_from_builtin(x.dtype)
    fill = dtype(-np.inf) if kind == "max" else dtype(0)
    power = float(a.get("p", 2))
    tails = [max(ax.reach() - ax.size - ax.begin, 0) for ax in axes]
    pads = interleave([ax.begin for ax in axes], tails)
    padded = mb.pad(x=x, pad=np.int32([0, 0, 0, 0] + pads), constant_val=fill) if any(pads) else x
    table = _index_table(dims, a.get("storage_order", 0), axes, tails) if indices else None
    best, where = None, None
    for offset in itertools.product(*(range(ax.kernel) for ax in axes)):
        starts = [j * ax.dilation for j, ax in zip(offset, axes, strict=True)]
        ends = [st + (ax.out - 1) * ax.stride + 1 for st, ax in zip(starts, axes, strict=True)]
        steps = [ax.stride for ax in axes]
        tap = mb.slice_by_index(x=padded, begin=np.int32([0, 0, *starts]), end=np.int32([0, 0, *ends]),
                                stride=np.int32([1, 1, *steps]), begin_mask=[True, True] + [False] * len(axes),
                                end_mask=[True, True] + [False] * len(axes))
        if kind == "lp":
            tap = _lp_term(tap, power, dtype)
        if best is None:
            best = tap
            where = None if table is None else _slice_table(table, starts, ends, steps)
        elif kind in ("avg", "lp"):
            best = mb.add(x=best, y=tap)
        elif table is None:
            best = mb.maximum(x=best, y=tap)
        else:  # strictly greater: the first of equal values wins, as onnxruntime's scan does
            wins = mb.greater(x=tap, y=best)
            where = mb.select(cond=wins, a=_slice_table(table, starts, ends, steps), b=where)
            best = mb.select(cond=wins, a=tap, b=best)
    if kind == "avg":
        count = functools.reduce(np.multiply.outer, [ax.counted(bool(a.get("count_include_pad", 0))) for ax in axes])
        best = mb.real_div(x=best, y=count.astype(dtype), name=ctx.name(node))
    elif kind == "lp":
        best = mb.sqrt(x=best, name=ctx.name(node)) if power == 2 else \
            mb.pow(x=best, y=dtype(1 / power), name=ctx.name(node))
    ctx.set(node.output[0], best if kind in ("avg", "lp") else mb.identity(x=best, name=ctx.name(node)))
    if indices:
        ctx.set(node.output[1], mb.identity(x=where, name=ctx.name(node, 1)))


def _lp_term(tap, power: float, dtype):
    if power == 1:
        return mb.abs(x=tap)
    if power == 2:
        return mb.mul(x=tap, y=tap)
    return mb.pow(x=mb.abs(x=tap), y=dtype(power))


def _index_table(dims, storage_order: int, axes: list[Axis], tails: list[int]) -> np.ndarray:
    """ONNX's Indices of every input element (row-major over N, C and the spatial dims, or
    column-major over the spatial dims with storage_order=1), padded like the input with -1."""
    spatial = dims[2:]
    plane = int(np.prod(spatial))
    positions = np.arange(plane).reshape(spatial, order="F" if storage_order else "C")
    planes = np.arange(dims[0] * dims[1]).reshape(dims[0], dims[1], *[1] * len(spatial)) * plane
    table = (planes + positions).astype(np.int32)
    return np.pad(table, [(0, 0), (0, 0), *((ax.begin, t) for ax, t in zip(axes, tails, strict=True))],
                  constant_values=-1)


def _slice_table(table: np.ndarray, starts, ends, steps) -> np.ndarray:
    return table[(slice(None), slice(None), *(slice(b, e, s) for b, e, s in zip(starts, ends, steps, strict=True)))]


def _global(mil_op):
    def convert(ctx, node):
        x = ctx.var(node.input[0])
        ctx.set(node.output[0], mil_op(x=x, axes=list(range(2, x.rank)), keep_dims=True, name=ctx.name(node)))

    return convert


register("GlobalAveragePool")(_global(mb.reduce_mean))
register("GlobalMaxPool")(_global(mb.reduce_max))
