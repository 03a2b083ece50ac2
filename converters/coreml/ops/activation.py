"""Activations: one MIL op each where MIL has the exact function, a short composition otherwise.

Each converter folds to numpy when its input is known at conversion time (see arithmetic.py).
"""

from __future__ import annotations

import math

import numpy as np
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil import types

from bridge.converters.coreml.context import attrs
from bridge.converters.coreml.ops.arithmetic import const_like, constants, fold
from bridge.converters.coreml.registry import register


def _sigmoid_np(x):
    return 1 / (1 + np.exp(-x))


def _softplus_np(x):
    return np.logaddexp(0, x).astype(x.dtype)


def _activation(op_type: str, mil_op, np_op, since: int = 1):
    """Register `op_type`: the decorated function maps the node's attributes to the keyword
    arguments of both the lowering `mil_op(x, ...)` and the fold `np_op(x, ...)`. Float arguments
    take x's dtype, since MIL refuses an fp32 alpha next to an fp16 x."""

    def wrap(params):
        def convert(ctx, node):
            kwargs = params(attrs(node))
            values = constants(ctx, node)
            if values is not None:
                return fold(ctx, node, np_op(values[0], **kwargs), values[0].dtype)
            x = ctx.var(node.input[0])
            kwargs = {k: const_like(v, x) if isinstance(v, float) else v for k, v in kwargs.items()}
            ctx.set(node.output[0], mil_op(x=x, name=ctx.name(node), **kwargs))

        register(op_type, since=since)(convert)
        return convert

    return wrap


def _no_params(a):
    return {}


for _onnx, _mil, _np in (("Relu", mb.relu, lambda x: np.maximum(x, 0)), ("Sigmoid", mb.sigmoid, _sigmoid_np),
                         ("Tanh", mb.tanh, np.tanh), ("Softplus", mb.softplus, _softplus_np),
                         ("Softsign", mb.softsign, lambda x: x / (1 + np.abs(x)))):
    _activation(_onnx, _mil, _np)(_no_params)


@_activation("LeakyRelu", mb.leaky_relu, lambda x, alpha: np.where(x < 0, alpha * x, x))
def leaky_relu(a):
    return {"alpha": float(a.get("alpha", 0.01))}


def _elu_np(x, alpha):
    return np.where(x < 0, alpha * np.expm1(np.minimum(x, 0)), x)


@_activation("Elu", mb.elu, _elu_np)
def elu(a):
    return {"alpha": float(a.get("alpha", 1.0))}


@_activation("HardSigmoid", mb.sigmoid_hard, lambda x, alpha, beta: np.clip(alpha * x + beta, 0, 1))
def hard_sigmoid(a):
    """MIL's sigmoid_hard is ONNX's definition exactly: min(max(alpha * x + beta, 0), 1)."""
    return {"alpha": float(a.get("alpha", 0.2)), "beta": float(a.get("beta", 0.5))}


def _celu(x, alpha, name):
    """alpha * elu(x / alpha): x above 0, alpha * (exp(x / alpha) - 1) below."""
    scaled = mb.elu(x=mb.real_div(x=x, y=alpha), alpha=const_like(1, x))
    return mb.mul(x=scaled, y=alpha, name=name)


@_activation("Celu", _celu, lambda x, alpha: alpha * _elu_np(x / alpha, 1.0), since=12)
def celu(a):
    return {"alpha": float(a.get("alpha", 1.0))}


def _shrink(x, lambd, bias, name):
    below = mb.select(cond=mb.less(x=x, y=-lambd), a=mb.add(x=x, y=bias), b=const_like(0, x))
    return mb.select(cond=mb.greater(x=x, y=lambd), a=mb.sub(x=x, y=bias), b=below, name=name)


def _shrink_np(x, lambd, bias):
    return np.where(x > lambd, x - bias, np.where(x < -lambd, x + bias, 0)).astype(x.dtype)


@_activation("Shrink", _shrink, _shrink_np, since=9)
def shrink(a):
    return {"lambd": float(a.get("lambd", 0.5)), "bias": float(a.get("bias", 0.0))}


def _selu(x, alpha, gamma, name):
    return mb.mul(x=mb.elu(x=x, alpha=alpha), y=const_like(gamma, x), name=name)


@_activation("Selu", _selu, lambda x, alpha, gamma: gamma * _elu_np(x, alpha))
def selu(a):
    return {"alpha": float(a.get("alpha", 1.67326319217681884765625)),
            "gamma": float(a.get("gamma", 1.05070102214813232421875))}


def _hard_swish(x, name):
    return mb.mul(x=x, y=mb.sigmoid_hard(x=x, alpha=const_like(1 / 6, x), beta=const_like(0.5, x)), name=name)


_activation("HardSwish", _hard_swish, lambda x: x * np.clip(x / 6 + 0.5, 0, 1), since=14)(_no_params)


def _mish(x, name):
    return mb.mul(x=x, y=mb.tanh(x=mb.softplus(x=x)), name=name)


_activation("Mish", _mish, lambda x: x * np.tanh(_softplus_np(x)), since=18)(_no_params)


def _thresholded_relu(x, alpha, name):
    """ONNX keeps x only where x > alpha; MIL's thresholded_relu keeps x == alpha too."""
    return mb.select(cond=mb.greater(x=x, y=const_like(alpha, x)), a=x, b=const_like(0, x), name=name)


@_activation("ThresholdedRelu", _thresholded_relu, lambda x, alpha: np.where(x > alpha, x, 0), since=10)
def thresholded_relu(a):
    return {"alpha": float(a.get("alpha", 1.0))}


def _gelu_np(x, mode):
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


@_activation("Gelu", mb.gelu, _gelu_np, since=20)
def gelu(a):
    """Gelu is an ONNX op since opset 20; older exports spell it with Erf, which converts as is."""
    return {"mode": {"none": "EXACT", "tanh": "TANH_APPROXIMATION"}[a.get("approximate", "none")]}


@register("PRelu")
def prelu(ctx, node):
    """MIL's prelu takes one slope per channel of a rank-4 input; a single slope is leaky_relu;
    any other broadcast shape is where(x < 0, x * slope, x)."""
    values = constants(ctx, node)
    if values is not None:
        x, slope = values
        return fold(ctx, node, np.where(x < 0, x * slope, x), x.dtype)
    x, slope = ctx.var(node.input[0]), ctx.const(node.input[1])
    name = ctx.name(node)
    if slope is not None and slope.size == 1:
        return ctx.set(node.output[0], mb.leaky_relu(x=x, alpha=const_like(slope.reshape(-1)[0], x), name=name))
    if slope is not None and len(x.shape) == 4 and _per_channel(slope, x.shape[1]):
        return ctx.set(node.output[0], mb.prelu(x=x, alpha=const_like(slope.reshape(-1), x), name=name))
    slope = ctx.var(node.input[1])
    slope = const_like(slope, x) if isinstance(slope, np.ndarray) else slope
    ctx.set(node.output[0], mb.select(cond=mb.less(x=x, y=const_like(0, x)), a=mb.mul(x=x, y=slope), b=x, name=name))


def _per_channel(slope: np.ndarray, channels: int) -> bool:
    """Slope shapes that broadcast as one value per channel of an NCHW input: (C,1,1) or (1,C,1,1)."""
    return slope.shape[-3:] == (channels, 1, 1) and all(d == 1 for d in slope.shape[:-3])


# softmax family --------------------------------------------------------------------------------
def _softmax_np(x, axes):
    e = np.exp(x - x.max(axis=axes, keepdims=True))
    return e / e.sum(axis=axes, keepdims=True)


def _log_softmax_np(x, axes):
    shifted = x - x.max(axis=axes, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axes, keepdims=True))


def _softmax_mil(x, axes, name):
    if len(axes) == 1:
        return mb.softmax(x=x, axis=axes[0], name=name)
    shifted = mb.sub(x=x, y=mb.reduce_max(x=x, axes=axes, keep_dims=True))
    e = mb.exp(x=shifted)
    return mb.real_div(x=e, y=mb.reduce_sum(x=e, axes=axes, keep_dims=True), name=name)


def _log_softmax_mil(x, axes, name):
    """x - logsumexp(x), not log(softmax(x)): the latter underflows to log(0) for very negative logits."""
    return mb.sub(x=x, y=mb.reduce_log_sum_exp(x=x, axes=axes, keep_dims=True), name=name)


def _softmax_family(np_op, mil_op, flatten: bool):
    """Opset 13 normalises over one axis (default -1). Before, the input was flattened to 2-D at
    `axis` (default 1) and normalised over every axis from `axis` on; we reduce over those axes
    directly instead of reshaping, so dynamic shapes need no shape arithmetic."""

    def convert(ctx, node):
        x = ctx.value(node.input[0])
        rank = len(x.shape)
        axis = attrs(node).get("axis", 1 if flatten else -1) % rank
        axes = list(range(axis, rank)) if flatten else [axis]
        values = constants(ctx, node)
        if values is not None:
            return fold(ctx, node, np_op(values[0], tuple(axes)), values[0].dtype)
        ctx.set(node.output[0], mil_op(ctx.var(node.input[0]), axes, ctx.name(node)))

    return convert


def _hardmax_np(x, axes):
    flat = np.moveaxis(x, axes[0], -1) if len(axes) == 1 else x.reshape(*x.shape[:axes[0]], -1)
    hot = (np.arange(flat.shape[-1]) == flat.argmax(axis=-1)[..., None]).astype(x.dtype)
    return np.moveaxis(hot, -1, axes[0]) if len(axes) == 1 else hot.reshape(x.shape)


def _hardmax_mil(x, axes, name):
    """1 at the first maximum along the axis, 0 elsewhere. Before opset 13 the axes from `axis` on
    count as one, so they are flattened for the argmax (static sizes needed)."""
    dtype = types.nptype_from_builtin(x.dtype)
    if len(axes) == 1:
        index = mb.reduce_argmax(x=x, axis=axes[0], keep_dims=False)
        return mb.one_hot(indices=index, one_hot_vector_size=x.shape[axes[0]], axis=axes[0],
                          on_value=dtype(1), off_value=dtype(0), name=name)
    lead = list(x.shape[:axes[0]])
    flat = mb.reshape(x=x, shape=np.int32([*lead, -1]))
    index = mb.reduce_argmax(x=flat, axis=-1, keep_dims=False)
    hot = mb.one_hot(indices=index, one_hot_vector_size=int(np.prod(x.shape[axes[0]:])), axis=-1,
                     on_value=dtype(1), off_value=dtype(0))
    return mb.reshape(x=hot, shape=np.int32(list(x.shape)), name=name)


for _flatten, _since in ((True, 1), (False, 13)):
    register("Hardmax", since=_since)(_softmax_family(_hardmax_np, _hardmax_mil, _flatten))
    register("Softmax", since=_since)(_softmax_family(_softmax_np, _softmax_mil, _flatten))
    register("LogSoftmax", since=_since)(_softmax_family(_log_softmax_np, _log_softmax_mil, _flatten))
