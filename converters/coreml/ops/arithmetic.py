"""Elementwise arithmetic, comparison and logic, casts, and the small tensor math ops (CumSum, TopK,
ArgMax, Einsum) that lower to one or a few MIL ops.

Every converter first folds to numpy when all its inputs are known at conversion time: shape
subgraphs (Shape -> Cast -> Mul -> ...) must reach MIL as constants, and numpy there follows ONNX
semantics (int64, truncating integer division) rather than Core ML's int32/fp32 ones.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil import types

from bridge.converters.coreml.context import attrs
from bridge.converters.coreml.registry import register

# Core ML computes in fp16/fp32/int32/bool: every integer type lands in int32, double in fp32.
MIL_DTYPE = {np.dtype(t): "int32" for t in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
                                            np.uint32, np.uint64)}
MIL_DTYPE.update({np.dtype(np.float16): "fp16", np.dtype(np.float32): "fp32", np.dtype(np.float64): "fp32",
                  np.dtype(np.bool_): "bool"})


# shared helpers (activation.py and reduce.py use them too) ------------------------------------
def constants(ctx, node) -> list[np.ndarray] | None:
    """Every present input's value when all are known at conversion time, else None."""
    values = [ctx.const(name) for name in node.input if name]
    return None if any(v is None for v in values) else values


def np_dtype(value) -> np.dtype:
    """The numpy dtype of a numpy constant or a MIL Var."""
    if isinstance(value.dtype, np.dtype):
        return value.dtype
    return np.dtype(types.nptype_from_builtin(value.dtype))


def is_int(value) -> bool:
    return np.issubdtype(np_dtype(value), np.integer)


def const_like(value, like) -> np.ndarray:
    """`value` as a constant in `like`'s dtype: MIL ops refuse mixed fp32/int32/fp16 operands."""
    return np.asarray(value, dtype=np_dtype(like))


def fold(ctx, node, value, dtype=None) -> None:
    """numpy ufuncs turn 0-d arrays into numpy scalars, which ctx.const would not recognise."""
    ctx.set(node.output[0], np.asarray(value, dtype=dtype))


def operand(ctx, node, index: int):
    """Input `index` as a numpy array when known at conversion time, else its Var; None if absent."""
    if len(node.input) <= index or not node.input[index]:
        return None
    value = ctx.const(node.input[index])
    return value if value is not None else ctx.var(node.input[index])


def chain(steps, x, name: str | None = None):
    """Apply binary MIL ops in turn, `x = op(x, y)`; the last op carries the node's name."""
    for i, (op, y) in enumerate(steps):
        x = op(x=x, y=y, **({"name": name} if name and i == len(steps) - 1 else {}))
    return x


# binary ----------------------------------------------------------------------------------------
def _div(x, y, name=None):
    """ONNX integer Div truncates toward zero, MIL's floor_div floors: divide the magnitudes and
    put the sign back."""
    if not is_int(x):
        return mb.real_div(x=x, y=y, name=name)
    q = mb.floor_div(x=mb.abs(x=x), y=mb.abs(x=y))
    return mb.mul(x=q, y=mb.mul(x=mb.sign(x=x), y=mb.sign(x=y)), name=name)


def _np_div(a, b):
    if np.issubdtype(a.dtype, np.integer):
        return (np.abs(a) // np.abs(b) * np.sign(a) * np.sign(b)).astype(a.dtype)
    return np.divide(a, b).astype(a.dtype)


def _equal(x, y, name=None):
    """MIL's equal takes numbers only; for bools, equality is not-xor."""
    if np_dtype(x) == np.bool_:
        return mb.logical_not(x=mb.logical_xor(x=x, y=y), name=name)
    return mb.equal(x=x, y=y, name=name)


_BINARY = {
    "Add": (mb.add, np.add), "Sub": (mb.sub, np.subtract), "Mul": (mb.mul, np.multiply),
    "Div": (_div, _np_div),
    "Equal": (_equal, np.equal), "Less": (mb.less, np.less), "Greater": (mb.greater, np.greater),
    "LessOrEqual": (mb.less_equal, np.less_equal), "GreaterOrEqual": (mb.greater_equal, np.greater_equal),
    "And": (mb.logical_and, np.logical_and), "Or": (mb.logical_or, np.logical_or),
    "Xor": (mb.logical_xor, np.logical_xor),
}


def _binary(mil_op, np_op):
    def convert(ctx, node):
        values = constants(ctx, node)
        if values is not None:  # shape arithmetic folds at conversion time
            return fold(ctx, node, np_op(*values))
        ctx.set(node.output[0], mil_op(x=ctx.var(node.input[0]), y=ctx.var(node.input[1]), name=ctx.name(node)))

    return convert


for _name, (_mil, _np) in _BINARY.items():
    register(_name)(_binary(_mil, _np))


@register("Pow")
def pow_(ctx, node):
    """ONNX lets the exponent's type differ from the base's (x ** 2 with an int64 2); MIL does not."""
    values = constants(ctx, node)
    if values is not None:
        base, exponent = values
        return fold(ctx, node, np.power(base.astype(np.float64), exponent), base.dtype)
    x, y = ctx.var(node.input[0]), ctx.var(node.input[1])
    if is_int(x) and not is_int(y):
        return ctx.set(node.output[0], _int_pow_float(ctx, node, x, y))
    if np_dtype(y) != np_dtype(x):
        y = y.astype(np_dtype(x)) if isinstance(y, np.ndarray) else mb.cast(x=y, dtype=MIL_DTYPE[np_dtype(x)])
    ctx.set(node.output[0], mb.pow(x=x, y=y, name=ctx.name(node)))


def _int_pow_float(ctx, node, x, y):
    """An integer base with a float exponent (2 ** 0.5) is computed in float and truncated toward
    zero, as onnxruntime does; the truncation is explicit so the final cast only meets integers."""
    base = x.astype(np_dtype(y)) if isinstance(x, np.ndarray) else mb.cast(x=x, dtype=MIL_DTYPE[np_dtype(y)])
    return int32_toward_zero(mb.pow(x=base, y=y), name=ctx.name(node))


def int32_toward_zero(x, name: str | None = None):
    """A float tensor as int32, truncated toward zero as C casts do; the truncation is spelled out
    so the cast itself only ever meets whole numbers."""
    truncated = mb.mul(x=mb.floor(x=mb.abs(x=x)), y=mb.sign(x=x))
    return mb.cast(x=truncated, dtype="int32", **({"name": name} if name else {}))


# unary -----------------------------------------------------------------------------------------
def _erf_np(x):
    return np.vectorize(math.erf, otypes=[x.dtype])(x)


def _acosh(x, name):
    """log(x + sqrt(x^2 - 1)); MIL has no acosh."""
    root = mb.sqrt(x=mb.sub(x=mb.mul(x=x, y=x), y=const_like(1, x)))
    return mb.log(x=mb.add(x=x, y=root), name=name)


def _asinh(x, name):
    """sign(x) * log(|x| + sqrt(x^2 + 1)), on |x| so large negative x does not cancel to log(0)."""
    magnitude = mb.abs(x=x)
    root = mb.sqrt(x=mb.add(x=mb.mul(x=magnitude, y=magnitude), y=const_like(1, x)))
    return mb.mul(x=mb.sign(x=x), y=mb.log(x=mb.add(x=magnitude, y=root)), name=name)


def _isnan(x, name):
    """NaN is the only value unequal to itself."""
    return mb.not_equal(x=x, y=x, name=name)


_UNARY = {
    "Sqrt": (mb.sqrt, np.sqrt), "Exp": (mb.exp, np.exp), "Log": (mb.log, np.log), "Abs": (mb.abs, np.abs),
    "Floor": (mb.floor, np.floor), "Ceil": (mb.ceil, np.ceil), "Round": (mb.round, np.round),  # both half-to-even
    "Sign": (mb.sign, np.sign), "Erf": (mb.erf, _erf_np), "Not": (mb.logical_not, np.logical_not),
    "Sin": (mb.sin, np.sin), "Cos": (mb.cos, np.cos), "Tan": (mb.tan, np.tan), "Asin": (mb.asin, np.arcsin),
    "Acos": (mb.acos, np.arccos), "Atan": (mb.atan, np.arctan), "Sinh": (mb.sinh, np.sinh),
    "Cosh": (mb.cosh, np.cosh), "Atanh": (mb.atanh, np.arctanh),
    "Neg": (lambda x, name: mb.mul(x=x, y=const_like(-1, x), name=name), np.negative),
    "Acosh": (_acosh, np.arccosh), "Asinh": (_asinh, np.arcsinh), "IsNaN": (_isnan, np.isnan),
    # MIL's inverse adds epsilon (default 1e-4) to x first; ONNX's Reciprocal does not.
    "Reciprocal": (lambda x, name: mb.inverse(x=x, epsilon=const_like(0, x), name=name), np.reciprocal),
}


def _unary(mil_op, np_op):
    def convert(ctx, node):
        values = constants(ctx, node)
        if values is not None:
            return fold(ctx, node, np_op(values[0]))
        ctx.set(node.output[0], mil_op(x=ctx.var(node.input[0]), name=ctx.name(node)))

    return convert


for _name, (_mil, _np) in _UNARY.items():
    register(_name)(_unary(_mil, _np))


@register("IsInf", since=10)
def is_inf(ctx, node):
    a = attrs(node)
    signs = [sign for sign, key in ((1, "detect_positive"), (-1, "detect_negative")) if a.get(key, 1)]
    values = constants(ctx, node)
    if values is not None:
        x = values[0]
        return fold(ctx, node, np.isin(x, [sign * np.inf for sign in signs]) if signs else np.zeros(x.shape, bool))
    x = ctx.var(node.input[0])
    if not signs:  # detects nothing: |x| < 0 is false for every x, NaN included
        return ctx.set(node.output[0], mb.less(x=mb.abs(x=x), y=const_like(0, x), name=ctx.name(node)))
    hits = [mb.equal(x=x, y=const_like(sign * np.inf, x)) for sign in signs]
    ctx.set(node.output[0], hits[0] if len(hits) == 1 else mb.logical_or(x=hits[0], y=hits[1], name=ctx.name(node)))


@register("Mod", since=10)
def mod(ctx, node):
    """fmod=0 (integers): the remainder takes the divisor's sign, which is MIL's mod. fmod=1: C's
    fmod, the dividend's sign: the magnitudes' remainder with x's sign put back."""
    fmod = bool(attrs(node).get("fmod", 0))
    values = constants(ctx, node)
    if values is not None:
        x, y = values
        return fold(ctx, node, np.fmod(x, y) if fmod else np.mod(x, y), x.dtype)
    x, y = ctx.var(node.input[0]), ctx.var(node.input[1])
    if not fmod:
        return ctx.set(node.output[0], mb.mod(x=x, y=y, name=ctx.name(node)))
    rest = mb.mod(x=mb.abs(x=x), y=mb.abs(x=y))
    ctx.set(node.output[0], mb.mul(x=rest, y=mb.sign(x=x), name=ctx.name(node)))


# variadic --------------------------------------------------------------------------------------
_VARIADIC = {"Sum": (mb.add, np.add), "Max": (mb.maximum, np.maximum), "Min": (mb.minimum, np.minimum),
             "Mean": (mb.add, np.add)}


def _variadic(op_type, mil_op, np_op):
    def convert(ctx, node):
        values = constants(ctx, node)
        if values is not None:
            out = functools.reduce(np_op, values)
            return fold(ctx, node, out / len(values) if op_type == "Mean" else out, values[0].dtype)
        inputs = [ctx.var(name) for name in node.input]
        if len(inputs) == 1:
            return ctx.set(node.output[0], inputs[0])
        if op_type != "Mean":
            return ctx.set(node.output[0], chain([(mil_op, y) for y in inputs[1:]], inputs[0], ctx.name(node)))
        total = chain([(mb.add, y) for y in inputs[1:]], inputs[0])
        ctx.set(node.output[0], mb.real_div(x=total, y=const_like(len(inputs), total), name=ctx.name(node)))

    return convert


for _name, (_mil, _np) in _VARIADIC.items():
    register(_name)(_variadic(_name, _mil, _np))


@register("Where")
def where(ctx, node):
    values = constants(ctx, node)
    if values is not None:
        return fold(ctx, node, np.where(*values))
    cond, a, b = (ctx.var(name) for name in node.input)
    ctx.set(node.output[0], mb.select(cond=cond, a=_widen(a, b, cond), b=b, name=ctx.name(node)))


def _widen(a, b, cond):
    """MIL's select takes its output shape from a and b only, so when cond alone is larger, a is
    broadcast to cond's shape first (a + 0 * cond)."""
    from coremltools.converters.mil.mil.ops.defs._utils import broadcast_shapes

    ab = broadcast_shapes(a.shape, b.shape)
    if broadcast_shapes(ab, cond.shape) == ab:
        return a
    zeros = mb.mul(x=mb.cast(x=cond, dtype=MIL_DTYPE[np_dtype(a)]), y=const_like(0, a))
    return mb.add(x=a, y=zeros)


@register("Clip", since=1)
def clip_attrs(ctx, node):
    """Before opset 11 the bounds are attributes."""
    a = attrs(node)
    _clip(ctx, node, *(None if a.get(k) is None else np.asarray(a[k], np.float32) for k in ("min", "max")))


@register("Clip", since=11)
def clip(ctx, node):
    """Since opset 11 the bounds are optional inputs, constant or not."""
    _clip(ctx, node, operand(ctx, node, 1), operand(ctx, node, 2))


def _clip(ctx, node, lo, hi):
    """mb.clip wants constant float bounds with lo < hi (iOS17 checks it); anything else is
    max-then-min, which is also what ONNX specifies when lo > hi."""
    x = ctx.const(node.input[0])
    if x is not None and all(isinstance(b, np.ndarray) for b in (lo, hi) if b is not None):
        for bound, op in ((lo, np.maximum), (hi, np.minimum)):
            x = x if bound is None else op(x, bound).astype(x.dtype)
        return fold(ctx, node, x)
    x = ctx.var(node.input[0])
    if not is_int(x) and isinstance(lo, np.ndarray) and isinstance(hi, np.ndarray) and lo < hi:
        clipped = mb.clip(x=x, alpha=const_like(lo, x), beta=const_like(hi, x), name=ctx.name(node))
        return ctx.set(node.output[0], clipped)
    steps = [(mb.maximum, lo), (mb.minimum, hi)]
    bounds = [(op, const_like(b, x) if isinstance(b, np.ndarray) else b) for op, b in steps if b is not None]
    ctx.set(node.output[0], chain(bounds, x, ctx.name(node)) if bounds else x)


# casts -----------------------------------------------------------------------------------------


def _cast(ctx, node, target: np.dtype):
    values = constants(ctx, node)
    if values is not None:
        return fold(ctx, node, values[0].astype(target))
    if target not in MIL_DTYPE:
        raise ctx.unsupported(node, f"Core ML has no {target} tensors")
    x = ctx.var(node.input[0])
    if MIL_DTYPE.get(np_dtype(x)) == MIL_DTYPE[target]:
        return ctx.set(node.output[0], x)
    ctx.set(node.output[0], mb.cast(x=x, dtype=MIL_DTYPE[target], name=ctx.name(node)))


@register("Cast")
def cast(ctx, node):
    from onnx import helper

    to = attrs(node)["to"]
    try:
        target = np.dtype(helper.tensor_dtype_to_np_dtype(to))
    except (KeyError, TypeError):
        raise ctx.unsupported(node, f"cast to ONNX type {to}") from None
    _cast(ctx, node, target)


@register("CastLike", since=15)
def cast_like(ctx, node):
    _cast(ctx, node, np_dtype(ctx.value(node.input[1])))


# tensor math -----------------------------------------------------------------------------------
def _axis_input(ctx, node, index: int, rank: int) -> int:
    axis = ctx.const(node.input[index])
    if axis is None:
        raise ctx.unsupported(node, "the axis must be known at conversion time")
    return int(axis.reshape(-1)[0]) % rank


@register("CumSum", since=11)
def cumsum(ctx, node):
    """MIL's cumsum accepts axis -1 but no other negative axis, so axes are made positive."""
    a = attrs(node)
    exclusive, reverse = bool(a.get("exclusive", 0)), bool(a.get("reverse", 0))
    axis = _axis_input(ctx, node, 1, len(ctx.value(node.input[0]).shape))
    values = constants(ctx, node)
    if values is not None:
        return fold(ctx, node, _cumsum_np(values[0], axis, exclusive, reverse))
    ctx.set(node.output[0], mb.cumsum(x=ctx.var(node.input[0]), axis=axis, exclusive=exclusive, reverse=reverse,
                                      name=ctx.name(node)))


def _cumsum_np(x, axis, exclusive, reverse):
    x = np.flip(x, axis) if reverse else x
    out = np.cumsum(x, axis=axis, dtype=x.dtype)
    if exclusive:
        out = np.concatenate([np.zeros_like(np.take(out, [0], axis)), np.take(out, range(x.shape[axis] - 1), axis)],
                             axis=axis)
    return np.flip(out, axis) if reverse else out


@register("TopK", since=1)
def topk_attr(ctx, node):
    """Opset 1 carries k as an attribute."""
    _topk(ctx, node, attrs(node)["k"])


@register("TopK", since=10)
def topk(ctx, node):
    k = ctx.const(node.input[1])
    if k is None:
        raise ctx.unsupported(node, "k must be known at conversion time")
    _topk(ctx, node, int(k.reshape(-1)[0]))


def _topk(ctx, node, k: int):
    """`sorted=0` leaves the order unspecified, so sorted output serves both. Ties: ONNX wants the
    lower index first; the numpy fold uses a stable sort for that, Core ML does not promise it."""
    a = attrs(node)
    largest = bool(a.get("largest", 1))
    axis = int(a.get("axis", -1)) % len(ctx.value(node.input[0]).shape)
    x = ctx.const(node.input[0])
    if x is not None:
        order = np.argsort(-x if largest else x, axis=axis, kind="stable").take(range(k), axis=axis)
        ctx.set(node.output[0], np.take_along_axis(x, order, axis))
        return ctx.set(node.output[1], order.astype(np.int64))
    values, indices = mb.topk(x=ctx.var(node.input[0]), k=k, axis=axis, ascending=not largest, name=ctx.name(node))
    ctx.set(node.output[0], values)
    if len(node.output) > 1 and node.output[1]:
        ctx.set(node.output[1], indices)


def _arg(mil_op, np_op):
    def convert(ctx, node):
        a = attrs(node)
        last = bool(a.get("select_last_index", 0))
        axis, keep = int(a.get("axis", 0)) % len(ctx.value(node.input[0]).shape), bool(a.get("keepdims", 1))
        x = ctx.const(node.input[0])
        if x is not None:
            out = np_op(np.flip(x, axis), axis=axis) if last else np_op(x, axis=axis)
            out = x.shape[axis] - 1 - out if last else out
            return fold(ctx, node, np.expand_dims(out, axis) if keep else out, np.int64)
        if not last:
            return ctx.set(node.output[0], mil_op(x=ctx.var(node.input[0]), axis=axis, keep_dims=keep,
                                                  name=ctx.name(node)))
        ctx.set(node.output[0], _arg_last(ctx, node, mil_op, axis, keep))

    return convert


def _arg_last(ctx, node, mil_op, axis: int, keep: bool):
    """select_last_index: MIL picks the first of equal values, so the axis is reversed first and
    the index counted back from the end, (dim - 1) - i."""
    x = ctx.var(node.input[0])
    first = mil_op(x=mb.reverse(x=x, axes=[axis]), axis=axis, keep_dims=keep)
    dim = x.shape[axis]
    last = np.int32(dim - 1) if isinstance(dim, (int, np.integer)) else \
        mb.sub(x=mb.gather(x=mb.shape(x=x), indices=np.int32(axis), axis=0), y=np.int32(1))
    return mb.sub(x=last, y=first, name=ctx.name(node))


register("ArgMax")(_arg(mb.reduce_argmax, np.argmax))
register("ArgMin")(_arg(mb.reduce_argmin, np.argmin))


@register("Einsum", since=12)
def einsum(ctx, node):
    """coremltools' einsum builder (shared by its torch and TF frontends) maps the common attention
    and projection equations to matmul and lowers the rest to transpose/reshape/matmul/reduce_sum."""
    from coremltools.converters.mil.frontend._utils import build_einsum_mil

    equation = attrs(node)["equation"].replace(" ", "")
    values = constants(ctx, node)
    if values is not None:
        return fold(ctx, node, np.einsum(equation, *values))
    inputs = [ctx.var(name) for name in node.input]
    if "->" not in equation:  # implicit output: the ellipsis, then the labels used once, alphabetically
        letters = equation.replace(",", "").replace("...", "")
        equation += "->" + ("..." if "..." in equation else "") + "".join(
            sorted(c for c in set(letters) if letters.count(c) == 1))
    equation = _spell_out_ellipsis(equation, [len(v.shape) for v in inputs])
    if equation == "->":  # a scalar in, the same scalar out (the builder would transpose it by [])
        return ctx.set(node.output[0], mb.identity(x=inputs[0], name=ctx.name(node)))
    inputs = [mb.const(val=v) if isinstance(v, np.ndarray) else v for v in inputs]
    ctx.set(node.output[0], build_einsum_mil(inputs, equation, ctx.name(node)))


def _spell_out_ellipsis(equation: str, ranks: list[int]) -> str:
    """'...' stands for each operand's leading dims not named by a label; they broadcast aligned
    from the right, like numpy's. Fresh letters name them so the builder sees plain labels."""
    if "..." not in equation:
        return equation
    operands, output = equation.split("->")
    terms = operands.split(",")
    spans = [rank - len(t.replace("...", "")) if "..." in t else 0 for t, rank in zip(terms, ranks, strict=True)]
    fresh = [c for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in equation][:max(spans)]
    terms = [t.replace("...", "".join(fresh[len(fresh) - n:]) if n else "") for t, n in zip(terms, spans, strict=True)]
    return ",".join(terms) + "->" + output.replace("...", "".join(fresh))
