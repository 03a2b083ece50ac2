"""Matrix products: MatMul (numpy semantics, any rank) and Gemm."""

from __future__ import annotations

import numpy as np
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil import types

from bridge.converters.coreml.context import attrs
from bridge.converters.coreml.registry import register


@register("MatMul")
def matmul(ctx, node):
    """numpy semantics. MIL's matmul mishandles vectors (its shape check indexes a 1-D y's
    second-to-last axis; a 1-D x loses the leading batch axis of the result), so vectors become a
    row or a column for the op and that axis is squeezed away after."""
    a, b = ctx.const(node.input[0]), ctx.const(node.input[1])
    if a is not None and b is not None:  # folds at conversion time, like the arithmetic ops
        ctx.set(node.output[0], np.matmul(a, b))
        return
    x, y = ctx.var(node.input[0]), ctx.var(node.input[1])
    vectors = [len(x.shape) == 1, len(y.shape) == 1]
    if all(vectors):
        raise ctx.unsupported(node, "a dot product of two vectors is a scalar, which Core ML outputs cannot be")
    if not any(vectors):
        ctx.set(node.output[0], mb.matmul(x=x, y=y, name=ctx.name(node)))
        return
    product = mb.matmul(x=_matrix(x, 0) if vectors[0] else x, y=_matrix(y, -1) if vectors[1] else y)
    ctx.set(node.output[0], mb.squeeze(x=product, axes=[-2 if vectors[0] else -1], name=ctx.name(node)))


def _matrix(v, axis: int):
    return np.expand_dims(v, axis) if isinstance(v, np.ndarray) else mb.expand_dims(x=v, axes=[axis])


@register("Gemm")
def gemm(ctx, node):
    """alpha * A' B' + beta * C. A constant B becomes MIL's linear with alpha folded into its weight,
    and beta * C into its bias when C is the same for every row; any other C is added after."""
    at = attrs(node)
    b, c_name = ctx.const(node.input[1]), node.input[2] if len(node.input) > 2 else ""
    row = None if b is None or not c_name else _row_bias(ctx.const(c_name), b.shape[0 if at.get("transB", 0) else 1])
    rest = c_name if row is None else ""  # the C still to add after the product
    if b is not None:
        y = _gemm_linear(ctx, node, at, b, row, **_named(ctx, node, not rest))
    else:
        y = _gemm_matmul(ctx, node, at, **_named(ctx, node, not rest))
    if rest:
        c, beta = ctx.const(rest), at.get("beta", 1.0)
        c = mb.mul(x=ctx.var(rest), y=np.float32(beta)) if c is None else (c * beta).astype(np.float32)
        y = mb.add(x=y, y=c, name=ctx.name(node))
    ctx.set(node.output[0], y)


def _gemm_linear(ctx, node, at: dict, b: np.ndarray, row: np.ndarray | None, **name):
    x = ctx.var(node.input[0])
    dtype = types.nptype_from_builtin(x.dtype)
    if at.get("transA", 0):
        x = mb.transpose(x=x, perm=[1, 0])
    weight = ((b if at.get("transB", 0) else b.T) * at.get("alpha", 1.0)).astype(dtype)
    bias = None if row is None else (row * at.get("beta", 1.0)).astype(dtype)
    return mb.linear(x=x, weight=weight, bias=bias, **name)


def _gemm_matmul(ctx, node, at: dict, **name):
    alpha = at.get("alpha", 1.0)
    y = mb.matmul(x=ctx.var(node.input[0]), y=ctx.var(node.input[1]), transpose_x=bool(at.get("transA", 0)),
                  transpose_y=bool(at.get("transB", 0)), **({} if alpha != 1.0 else name))
    return y if alpha == 1.0 else mb.mul(x=y, y=np.float32(alpha), **name)


def _row_bias(c: np.ndarray | None, n: int) -> np.ndarray | None:
    """C as a length-n bias when it is the same for every row of the product (shape (), (1,), (n,),
    (1, 1) or (1, n)), else None."""
    if c is None or c.ndim > 2 or (c.ndim == 2 and c.shape[0] != 1) or c.size not in (1, n):
        return None
    return np.broadcast_to(c.reshape(-1), (n,))


def _named(ctx, node, last: bool) -> dict:
    return {"name": ctx.name(node)} if last else {}
