"""Average and max pooling, windowed and global.

ceil_mode follows onnxruntime and torch on sizes: a window that would start past the input and its
leading padding is dropped. Where the ceiled windows overrun the padded input, the overrun counts
neither towards a max nor towards an average's divisor (the ONNX spec, its reference evaluator and
torch agree; onnxruntime 1.23 alone counts it when count_include_pad=1). MIL's padding does exactly
that when averages exclude padding, so we lengthen the end padding instead of asking for ceil_mode;
only averages that count padding need MIL's own ceil_mode (1-D/2-D, symmetric pads).
"""

from __future__ import annotations

from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil.types.symbolic import any_symbolic

from bridge.converters.coreml.context import attrs
from bridge.converters.coreml.ops.conv import interleave, pad_args
from bridge.converters.coreml.registry import register


@register("MaxPool")
def max_pool(ctx, node):
    if len(node.output) > 1 and node.output[1]:
        raise ctx.unsupported(node, "the Indices output has no Core ML equivalent")
    x, kwargs, _ = _window(ctx, node, counts_padding=False)
    ctx.set(node.output[0], mb.max_pool(x=x, name=ctx.name(node), **kwargs))


@register("AveragePool")
def avg_pool(ctx, node):
    x, kwargs, counts = _window(ctx, node, counts_padding=bool(attrs(node).get("count_include_pad", 0)))
    ctx.set(node.output[0], mb.avg_pool(x=x, exclude_padding_from_average=not counts, name=ctx.name(node), **kwargs))


def _window(ctx, node, counts_padding: bool):
    """The input, MIL's window arguments, and whether the average must count padding."""
    a = attrs(node)
    kernel = a["kernel_shape"]
    rank = len(kernel)
    if any(d != 1 for d in a.get("dilations", [1] * rank)):
        raise ctx.unsupported(node, "Core ML pooling has no dilations")
    x = ctx.var(node.input[0])
    strides = a.get("strides", [1] * rank)
    if a.get("auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER"):
        # SAME fixes the output size at ceil(in / stride): ceil_mode is moot
        kwargs = pad_args(a, x.shape[2:], kernel, strides, [1] * rank)
    else:
        kwargs, counts_padding = _padding(ctx, node, a, x.shape[2:], kernel, strides, counts_padding)
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
        raise ctx.unsupported(node, "this ceil_mode needs MIL's, which takes 1-D or 2-D pooling with symmetric "
                                    "pads (and kernel >= stride on unpadded axes)")
    return {**as_given, "ceil_mode": True}, counts_padding


def overrun_of(size: int, kernel: int, stride: int, begin: int, end: int) -> int:
    """How far ceil_mode's last window reaches past the padded input. Output sizes follow
    onnxruntime and torch: no window may start past the input and its leading padding."""
    out = -(-(size + begin + end - kernel) // stride) + 1
    out = out - 1 if (out - 1) * stride >= size + begin else out
    return (out - 1) * stride + kernel - (size + begin + end)


def _global(mil_op):
    def convert(ctx, node):
        x = ctx.var(node.input[0])
        ctx.set(node.output[0], mil_op(x=x, axes=list(range(2, x.rank)), keep_dims=True, name=ctx.name(node)))

    return convert


register("GlobalAveragePool")(_global(mb.reduce_mean))
register("GlobalMaxPool")(_global(mb.reduce_max))
