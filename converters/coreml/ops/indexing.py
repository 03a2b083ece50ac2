"""Indexed reads and writes: GatherND, ScatterND, ScatterElements, OneHot.

ONNX indices may be negative (counted from the end of their axis); MIL's scatter and gather ops
do not promise to read them so, so every index is made non-negative first: in numpy when the
indices are constants, else with a select against the axis sizes (which must then be static).
Scatter reductions map one to one onto MIL's scatter modes.
"""

from __future__ import annotations

import numpy as np
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil.types.symbolic import is_symbolic

from bridge.converters.coreml.context import attrs
from bridge.converters.coreml.ops.arithmetic import MIL_DTYPE, np_dtype
from bridge.converters.coreml.registry import register

SCATTER_MODES = {"none": "update", "add": "add", "mul": "mul", "max": "max", "min": "min"}


def _non_negative(ctx, node, index: int, sizes: list):
    """Input `index` (indices into axes of `sizes`, broadcast along its last dim or elementwise)
    with negative entries wrapped, as int32."""
    known = ctx.const(node.input[index])
    if known is not None:
        known = known.astype(np.int64)
        if any(s is None for s in sizes) and (known < 0).any():
            raise ctx.unsupported(node, "negative indices into a run-time dim")
        return np.where(known < 0, known + np.asarray([s or 0 for s in sizes]), known).astype(np.int32)
    if any(s is None for s in sizes):
        raise ctx.unsupported(node, "run-time indices into a run-time dim")
    idx = ctx.var(node.input[index])
    bound = np.int32(sizes) if len(sizes) > 1 else np.int32(sizes[0])
    return mb.select(cond=mb.less(x=idx, y=np.int32(0)), a=mb.add(x=idx, y=bound), b=idx)


def _dims(x) -> list[int | None]:
    return [None if is_symbolic(d) else int(d) for d in x.shape]


def _reduction(ctx, node) -> str:
    reduction = attrs(node).get("reduction", "none")
    if reduction not in SCATTER_MODES:
        raise ctx.unsupported(node, f"reduction={reduction}")
    return SCATTER_MODES[reduction]


@register("GatherND", since=11)
def gather_nd(ctx, node):
    x = ctx.var(node.input[0])
    batch_dims = int(attrs(node).get("batch_dims", 0))
    depth = ctx.value(node.input[1]).shape[-1]
    if is_symbolic(depth):
        raise ctx.unsupported(node, "the index depth (last dim of indices) must be static")
    indices = _non_negative(ctx, node, 1, _dims(x)[batch_dims:batch_dims + int(depth)])
    kwargs = {"batch_dims": batch_dims} if batch_dims else {}
    ctx.set(node.output[0], mb.gather_nd(x=x, indices=indices, name=ctx.name(node), **kwargs))


@register("ScatterND", since=11)
def scatter_nd(ctx, node):
    x = ctx.var(node.input[0])
    depth = ctx.value(node.input[1]).shape[-1]
    if is_symbolic(depth):
        raise ctx.unsupported(node, "the index depth (last dim of indices) must be static")
    indices = _non_negative(ctx, node, 1, _dims(x)[:int(depth)])
    ctx.set(node.output[0], mb.scatter_nd(data=x, indices=indices, updates=ctx.var(node.input[2]),
                                          mode=_reduction(ctx, node), name=ctx.name(node)))


@register("ScatterElements", since=11)
def scatter_elements(ctx, node):
    """MIL's scatter_along_axis wants indices as large as the data off the axis; ONNX's may be
    smaller, and then each index becomes a full coordinate for scatter_nd."""
    x = ctx.var(node.input[0])
    axis = int(attrs(node).get("axis", 0)) % x.rank
    indices = _non_negative(ctx, node, 1, [_dims(x)[axis]])
    shape = [None if is_symbolic(d) else int(d) for d in ctx.value(node.input[1]).shape]
    mode, updates = _reduction(ctx, node), ctx.var(node.input[2])
    if all(s == d for i, (s, d) in enumerate(zip(shape, _dims(x), strict=True)) if i != axis):
        return ctx.set(node.output[0], mb.scatter_along_axis(data=x, indices=indices, updates=updates, axis=axis,
                                                              mode=mode, name=ctx.name(node)))
    if None in shape:
        raise ctx.unsupported(node, "indices smaller than the data off the axis need static sizes")
    grid = [np.int32(g) for g in np.indices(shape)]
    grid[axis] = indices
    coords = np.stack(grid, axis=-1) if all(isinstance(g, np.ndarray) for g in grid) else mb.stack(values=grid, axis=-1)
    ctx.set(node.output[0], mb.scatter_nd(data=x, indices=coords, updates=updates, mode=mode, name=ctx.name(node)))


@register("OneHot", since=9)
def one_hot(ctx, node):
    """Hot where an index, negative ones counted from the end, equals the position: compared in the
    indices' own type, so a fractional float index selects nothing (as onnxruntime does) and so
    does one outside [-depth, depth)."""
    depth, values = ctx.const(node.input[1]), ctx.const(node.input[2])
    if depth is None or values is None:
        raise ctx.unsupported(node, "depth and values must be known at conversion time")
    depth, (off, on) = int(depth.reshape(-1)[0]), values.reshape(-1)
    idx = ctx.value(node.input[0])
    axis = int(attrs(node).get("axis", -1)) % (len(idx.shape) + 1)
    shape = [1] * (len(idx.shape) + 1)
    shape[axis] = depth
    known = ctx.const(node.input[0])
    if known is not None:
        wrapped = np.where(known < 0, known + depth, known)
        hot = np.expand_dims(wrapped, axis) == np.arange(depth).reshape(shape)
        return ctx.set(node.output[0], np.where(hot, on, off).astype(values.dtype))
    idx = ctx.var(node.input[0])
    kind = np_dtype(idx)
    wrapped = mb.select(cond=mb.less(x=idx, y=kind.type(0)), a=mb.add(x=idx, y=kind.type(depth)), b=idx)
    hot = mb.equal(x=mb.expand_dims(x=wrapped, axes=[axis]), y=np.arange(depth).reshape(shape).astype(kind))
    out = np.int32 if np.issubdtype(values.dtype, np.integer) else np.float32 if values.dtype == np.float64 \
        else values.dtype.type
    # select takes its shape from its branches: `on` is spread over the condition's shape first
    on_everywhere = mb.add(x=mb.mul(x=mb.cast(x=hot, dtype=MIL_DTYPE[np.dtype(out)]), y=out(0)), y=out(on))
    ctx.set(node.output[0], mb.select(cond=hot, a=on_everywhere, b=out(off), name=ctx.name(node)))
