"""Normalizations in their inference form: statistics are constants or computed over the input.

MIL's norm ops take their parameters as constants in the input's dtype (before iOS17 they must
match it), so each converter reads them with `_params`, which refuses tensors known only at run time.
"""

from __future__ import annotations

import numpy as np
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil import types
from coremltools.converters.mil.mil.types.symbolic import any_symbolic, is_symbolic

from bridge.converters.coreml.context import attrs
from bridge.converters.coreml.registry import register


def _params(ctx, node, x, indices) -> list[np.ndarray | None]:
    """Constant inputs `indices` in x's dtype (None where the optional input is absent)."""
    dtype = types.nptype_from_builtin(x.dtype)
    out = []
    for i in indices:
        name = node.input[i] if len(node.input) > i else ""
        value = ctx.const(name)
        if name and value is None:
            raise ctx.unsupported(node, f"input {i} ({name}) must be constant for Core ML")
        out.append(None if value is None else value.astype(dtype))
    return out


def _only_first_output(ctx, node, why: str):
    if any(node.output[1:]):
        raise ctx.unsupported(node, why)


@register("BatchNormalization")
def batch_norm(ctx, node):
    """MIL's batch_norm takes rank 3 to 5; a rank-2 input (BatchNorm1d on features) gets a trailing
    axis for the op, as coremltools' torch frontend does."""
    a = attrs(node)
    if a.get("training_mode", 0):
        return _batch_norm_training(ctx, node, a)
    _only_first_output(ctx, node, "running statistics outputs exist only in training")
    x = ctx.var(node.input[0])
    if not 2 <= x.rank <= 5:
        raise ctx.unsupported(node, f"Core ML batch_norm takes rank 2 to 5, not {x.rank}")
    gamma, beta, mean, variance = _params(ctx, node, x, (1, 2, 3, 4))
    kwargs = {"mean": mean, "variance": variance, "gamma": gamma, "beta": beta, "epsilon": a.get("epsilon", 1e-5)}
    if x.rank > 2:
        ctx.set(node.output[0], mb.batch_norm(x=x, name=ctx.name(node), **kwargs))
        return
    y = mb.batch_norm(x=mb.expand_dims(x=x, axes=[-1]), **kwargs)
    ctx.set(node.output[0], mb.squeeze(x=y, axes=[-1], name=ctx.name(node)))


def _batch_norm_training(ctx, node, a: dict):
    """training_mode=1 normalizes with the batch's own mean and (population) variance over every
    axis but the channels, and outputs the running statistics blended with them by `momentum`."""
    x = ctx.var(node.input[0])
    if x.rank < 2:
        raise ctx.unsupported(node, f"rank {x.rank}: batch statistics need a channel axis")
    gamma, beta, mean, variance = _params(ctx, node, x, (1, 2, 3, 4))
    axes, shape = [0, *range(2, x.rank)], [-1] + [1] * (x.rank - 2)
    batch_mean = mb.reduce_mean(x=x, axes=axes, keep_dims=True)
    centred = mb.sub(x=x, y=batch_mean)
    batch_var = mb.reduce_mean(x=mb.mul(x=centred, y=centred), axes=axes, keep_dims=True)
    dtype = types.nptype_from_builtin(x.dtype)
    y = mb.mul(x=centred, y=mb.rsqrt(x=batch_var, epsilon=dtype(a.get("epsilon", 1e-5))))
    y = mb.add(x=mb.mul(x=y, y=gamma.reshape(shape)), y=beta.reshape(shape), name=ctx.name(node))
    ctx.set(node.output[0], y)
    momentum = dtype(a.get("momentum", 0.9))
    for index, running, batch in ((1, mean, batch_mean), (2, variance, batch_var)):
        if len(node.output) > index and node.output[index]:
            blended = mb.add(x=mb.mul(x=mb.reshape(x=batch, shape=[-1]), y=dtype(1) - momentum),
                             y=running * momentum, name=ctx.name(node, index))
            ctx.set(node.output[index], blended)


@register("InstanceNormalization")
def instance_norm(ctx, node):
    """MIL's instance_norm takes rank 3 or 4; rank 5 normalizes with layer_norm over the three
    spatial axes and applies the per-channel scale and bias after."""
    x = ctx.var(node.input[0])
    gamma, beta = _params(ctx, node, x, (1, 2))
    epsilon = attrs(node).get("epsilon", 1e-5)
    if x.rank in (3, 4):
        ctx.set(node.output[0], mb.instance_norm(x=x, gamma=gamma, beta=beta, epsilon=epsilon, name=ctx.name(node)))
        return
    if x.rank != 5:
        raise ctx.unsupported(node, f"Core ML instance normalization takes rank 3 to 5, not {x.rank}")
    y = mb.layer_norm(x=x, axes=[2, 3, 4], epsilon=epsilon)
    y = mb.mul(x=y, y=gamma.reshape(-1, 1, 1, 1))
    ctx.set(node.output[0], mb.add(x=y, y=beta.reshape(-1, 1, 1, 1), name=ctx.name(node)))


@register("LayerNormalization", since=17)
def layer_norm(ctx, node):
    """ONNX normalizes axes [axis, rank) and lets Scale and B broadcast against them; MIL wants
    gamma and beta of exactly that shape, so constants are broadcast here. Scale or B known only at
    run time are applied after the op."""
    a = attrs(node)
    x = ctx.var(node.input[0])
    axes = list(range(a.get("axis", -1) % x.rank, x.rank))
    if any(node.output[1:]):
        return _layer_norm_with_statistics(ctx, node, x, axes, a.get("epsilon", 1e-5))
    normalized = [x.shape[i] for i in axes]
    steps = [(node.input[i], op) for i, op in ((1, mb.mul), (2, mb.add)) if len(node.input) > i and node.input[i]]
    if all(ctx.const(name) is not None for name, _ in steps) and not any_symbolic(normalized):
        gamma, beta = (None if v is None else np.broadcast_to(v, normalized) for v in _params(ctx, node, x, (1, 2)))
        ctx.set(node.output[0], mb.layer_norm(x=x, axes=axes, gamma=gamma, beta=beta,
                                              epsilon=a.get("epsilon", 1e-5), name=ctx.name(node)))
        return
    y = mb.layer_norm(x=x, axes=axes, epsilon=a.get("epsilon", 1e-5))
    for i, (name, op) in enumerate(steps):
        y = op(x=y, y=ctx.var(name), **({"name": ctx.name(node)} if i == len(steps) - 1 else {}))
    ctx.set(node.output[0], y)


def _layer_norm_with_statistics(ctx, node, x, axes: list[int], epsilon: float):
    """When the graph reads Mean or InvStdDev (kept dims, as ONNX gives them), the normalization is
    spelled out so the three outputs come from the same statistics: MIL's layer_norm exposes none."""
    mean = mb.reduce_mean(x=x, axes=axes, keep_dims=True)
    centred = mb.sub(x=x, y=mean)
    variance = mb.reduce_mean(x=mb.mul(x=centred, y=centred), axes=axes, keep_dims=True)
    inv_std = mb.rsqrt(x=variance, epsilon=np.asarray(epsilon, types.nptype_from_builtin(x.dtype)))
    y = mb.mul(x=centred, y=inv_std)
    steps = [(mb.mul, 1), (mb.add, 2)]
    steps = [(op, ctx.var(node.input[i])) for op, i in steps if len(node.input) > i and node.input[i]]
    for i, (op, param) in enumerate(steps):
        param = param.astype(types.nptype_from_builtin(x.dtype)) if isinstance(param, np.ndarray) else param
        y = op(x=y, y=param, **({"name": ctx.name(node)} if i == len(steps) - 1 else {}))
    ctx.set(node.output[0], y)
    for index, value in ((1, mean), (2, inv_std)):
        if len(node.output) > index and node.output[index]:
            ctx.set(node.output[index], value)


def _group_norm(ctx, node, per_group: bool):
    """Each sample's channels in num_groups groups, each normalized over its channels and spatial
    positions (MIL's layer_norm over the last axis of an (N, groups, rest) view), then the per-
    channel scale and bias. Opset 18 gave scale and bias per group: repeated over its channels."""
    a = attrs(node)
    x = ctx.var(node.input[0])
    groups = int(a["num_groups"])
    dims = [None if is_symbolic(d) else int(d) for d in x.shape]
    if None in dims[1:] or dims[1] % groups:
        raise ctx.unsupported(node, "static channel and spatial sizes, channels a multiple of num_groups")
    rest = int(np.prod(dims[1:])) // groups
    grouped = mb.reshape(x=x, shape=np.int32([-1 if dims[0] is None else dims[0], groups, rest]))
    y = mb.reshape(x=mb.layer_norm(x=grouped, axes=[2], epsilon=np.float32(a.get("epsilon", 1e-5))),
                   shape=np.int32([-1 if d is None else d for d in dims]))
    scale, bias = _params(ctx, node, x, (1, 2))
    if per_group:
        scale, bias = (np.repeat(v, dims[1] // groups) for v in (scale, bias))
    shape = [-1] + [1] * (x.rank - 2)
    y = mb.mul(x=y, y=scale.reshape(shape))
    ctx.set(node.output[0], mb.add(x=y, y=bias.reshape(shape), name=ctx.name(node)))


@register("GroupNormalization", since=18)
def group_norm_v18(ctx, node):
    _group_norm(ctx, node, per_group=True)


@register("GroupNormalization", since=21)
def group_norm_v21(ctx, node):
    _group_norm(ctx, node, per_group=False)


@register("RMSNormalization", since=23)
def rms_norm(ctx, node):
    """x / sqrt(mean(x^2 over axes [axis, rank)) + epsilon) * scale."""
    a = attrs(node)
    x = ctx.var(node.input[0])
    axes = list(range(a.get("axis", -1) % x.rank, x.rank))
    dtype = types.nptype_from_builtin(x.dtype)
    mean_square = mb.reduce_mean(x=mb.mul(x=x, y=x), axes=axes, keep_dims=True)
    y = mb.mul(x=x, y=mb.rsqrt(x=mean_square, epsilon=dtype(a.get("epsilon", 1e-5))))
    scale = ctx.var(node.input[1])
    scale = scale.astype(dtype) if isinstance(scale, np.ndarray) else scale
    ctx.set(node.output[0], mb.mul(x=y, y=scale, name=ctx.name(node)))


@register("MeanVarianceNormalization", since=9)
def mean_variance_norm(ctx, node):
    """(x - mean) / (std + 1e-9) over `axes` (default: all but the channels), as ONNX's function
    body defines it."""
    x = ctx.var(node.input[0])
    axes = [int(i) % x.rank for i in attrs(node).get("axes", [0, 2, 3])]
    centred = mb.sub(x=x, y=mb.reduce_mean(x=x, axes=axes, keep_dims=True))
    std = mb.sqrt(x=mb.reduce_mean(x=mb.mul(x=centred, y=centred), axes=axes, keep_dims=True))
    dtype = types.nptype_from_builtin(x.dtype)
    ctx.set(node.output[0], mb.real_div(x=centred, y=mb.add(x=std, y=dtype(1e-9)), name=ctx.name(node)))


@register("LRN")
def lrn(ctx, node):
    """Same formula (alpha divided by size). Core ML's window is torch's (coremltools tests it
    against torch.nn.LocalResponseNorm at ranks 3 to 5), which for even sizes puts the extra channel
    before the centre where ONNX puts it after: only odd sizes agree."""
    a = attrs(node)
    x = ctx.var(node.input[0])
    if a["size"] % 2 == 0 or not 3 <= x.rank <= 5:
        raise ctx.unsupported(node, "Core ML's local_response_norm matches ONNX for odd sizes at rank 3 to 5 only")
    ctx.set(node.output[0], mb.local_response_norm(x=x, size=a["size"], alpha=a.get("alpha", 1e-4),
                                                   beta=a.get("beta", 0.75), k=a.get("bias", 1.0),
                                                   name=ctx.name(node)))
