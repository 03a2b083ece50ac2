"""Reductions: each ONNX Reduce* is one MIL reduce_* op.

Axes moved from an attribute to an optional input (ReduceSum at opset 13, the others at 18); one
converter per op reads whichever the node has, so a single registration covers every opset.
"""

from __future__ import annotations

import numpy as np
from coremltools.converters.mil import Builder as mb

from bridge.converters.coreml.context import attrs
from bridge.converters.coreml.ops.arithmetic import fold
from bridge.converters.coreml.registry import register


def _sum(x, axis, keepdims):
    return np.sum(x, axis=axis, keepdims=keepdims)


_REDUCE = {
    "ReduceSum": (mb.reduce_sum, _sum),
    "ReduceMean": (mb.reduce_mean, np.mean),
    "ReduceMax": (mb.reduce_max, np.max),
    "ReduceMin": (mb.reduce_min, np.min),
    "ReduceProd": (mb.reduce_prod, np.prod),
    "ReduceL1": (mb.reduce_l1_norm, lambda x, **kw: _sum(np.abs(x), **kw)),
    "ReduceL2": (mb.reduce_l2_norm, lambda x, **kw: np.sqrt(_sum(x * x, **kw))),
    "ReduceSumSquare": (mb.reduce_sum_square, lambda x, **kw: _sum(x * x, **kw)),
    "ReduceLogSum": (mb.reduce_log_sum, lambda x, **kw: np.log(_sum(x, **kw))),
    "ReduceLogSumExp": (mb.reduce_log_sum_exp, lambda x, **kw: np.log(_sum(np.exp(x), **kw))),
}


def _axes(ctx, node) -> list[int] | None:
    """The reduced axes (None: all of them), from the `axes` input or attribute."""
    if len(node.input) > 1 and node.input[1]:
        axes = ctx.const(node.input[1])
        if axes is None:
            raise ctx.unsupported(node, "the axes must be known at conversion time")
        axes = [int(a) for a in axes.reshape(-1)]
    else:
        axes = list(attrs(node).get("axes", []))
    return axes or None


def _reduce(mil_op, np_op):
    def convert(ctx, node):
        a = attrs(node)
        axes, keep = _axes(ctx, node), bool(a.get("keepdims", 1))
        if axes is None and a.get("noop_with_empty_axes", 0):
            return ctx.set(node.output[0], ctx.value(node.input[0]))
        x = ctx.const(node.input[0])
        if x is not None:
            return fold(ctx, node, np_op(x, axis=None if axes is None else tuple(axes), keepdims=keep), x.dtype)
        ctx.set(node.output[0], mil_op(x=ctx.var(node.input[0]), axes=axes, keep_dims=keep, name=ctx.name(node)))

    return convert


for _name, (_mil, _np) in _REDUCE.items():
    register(_name)(_reduce(_mil, _np))
