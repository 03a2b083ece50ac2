"""Convolutions and transposed convolutions over 1 to 3 spatial axes (what MIL's conv ops take)."""

from __future__ import annotations

from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil import types
from coremltools.converters.mil.mil.types.symbolic import any_symbolic

from bridge.converters.coreml.context import attrs
from bridge.converters.coreml.registry import register

_SAME = {"SAME_UPPER": "same", "SAME_LOWER": "same_lower"}


def interleave(begins, ends) -> list[int]:
    """ONNX lists all begins then all ends; MIL wants (begin, end) per axis."""
    return [int(p) for pair in zip(begins, ends, strict=True) for p in pair]


def pad_args(a: dict, in_dims, kernel, strides, dilations) -> dict:
    """MIL padding for ONNX auto_pad/pads. SAME_* become explicit pads whenever the spatial sizes are
    known: MIL's same_lower needs iOS16 and gives wrong 1-D pooling results (rdar://98852008 in
    coremltools' tests). Unknown sizes fall back to MIL's same/same_lower, which split as ONNX does."""
    auto_pad, rank = a.get("auto_pad", "NOTSET"), len(kernel)
    if auto_pad == "VALID":
        return {"pad_type": "valid"}
    if auto_pad in _SAME and any_symbolic(in_dims):
        return {"pad_type": _SAME[auto_pad]}
    if auto_pad in _SAME:
        totals = [max(0, (-(-i // s) - 1) * s + (k - 1) * d + 1 - i)
                  for i, k, s, d in zip(in_dims, kernel, strides, dilations, strict=True)]
        begins = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in totals]
        return {"pad_type": "custom", "pad": interleave(begins, [t - b for t, b in zip(totals, begins, strict=True)])}
    pads = a.get("pads", [0] * 2 * rank)
    return {"pad_type": "custom", "pad": interleave(pads[:rank], pads[rank:])}


def window_args(a: dict, rank: int) -> dict:
    return {"strides": a.get("strides", [1] * rank), "dilations": a.get("dilations", [1] * rank),
            "groups": a.get("group", 1)}


@register("Conv")
def conv(ctx, node):
    a = attrs(node)
    x, weight = ctx.var(node.input[0]), ctx.var(node.input[1])
    kwargs = window_args(a, len(weight.shape) - 2)
    kwargs.update(pad_args(a, x.shape[2:], weight.shape[2:], kwargs["strides"], kwargs["dilations"]))
    if len(node.input) > 2 and node.input[2]:
        if ctx.const(node.input[2]) is None:
            raise ctx.unsupported(node, "Core ML conv takes only a constant bias")
        kwargs["bias"] = ctx.var(node.input[2])
    ctx.set(node.output[0], mb.conv(x=x, weight=weight, name=ctx.name(node), **kwargs))


@register("ConvTranspose")
def conv_transpose(ctx, node):
    """MIL's conv_transpose computes the full output and crops `pad` from it. ONNX output_padding and
    output_shape can instead ask for more than the full output: those axes get zeros appended, and
    the bias is added after them (onnxruntime gives the appended positions the bias). Added after,
    the bias is folded back into conv_transpose by coremltools' passes when nothing is appended. We
    never pass MIL's own output_shape, whose split of the cropping its spec leaves open."""
    a = attrs(node)
    weight, bias = ctx.const(node.input[1]), ctx.const(node.input[2]) if len(node.input) > 2 else None
    if weight is None or (bias is None and len(node.input) > 2 and node.input[2]):
        raise ctx.unsupported(node, "Core ML conv_transpose takes only constant weights and bias")
    x = ctx.var(node.input[0])
    dtype = types.nptype_from_builtin(x.dtype)
    rank = weight.ndim - 2
    crops = transposed_crops(ctx, node, a, x.shape[2:], weight.shape[2:])
    grow = [max(-end, 0) for _, end in crops]
    y = mb.conv_transpose(x=x, weight=weight.astype(dtype), pad_type="custom",
                          pad=interleave([b for b, _ in crops], [max(e, 0) for _, e in crops]),
                          **window_args(a, rank), **_named(ctx, node, not any(grow) and bias is None))
    if any(grow):
        y = mb.pad(x=y, pad=[0, 0, 0, 0] + interleave([0] * rank, grow), **_named(ctx, node, bias is None))
    if bias is not None:
        y = mb.add(x=y, y=bias.astype(dtype).reshape(-1, *[1] * rank), name=ctx.name(node))
    ctx.set(node.output[0], y)


def _named(ctx, node, last: bool) -> dict:
    """The node's MIL name goes on whichever op ends up producing its output."""
    return {"name": ctx.name(node)} if last else {}


def transposed_crops(ctx, node, a: dict, in_dims, kernel) -> list[tuple[int, int]]:
    """(begin, end) to cut per axis from the full output (in-1)*stride + dilated kernel; a negative end
    appends zeros. With output_shape or SAME_*, the total is split as onnxruntime 1.23 and the ONNX
    spec do: the odd element goes to the end for SAME_UPPER, to the start otherwise."""
    rank = len(kernel)
    strides, dilations = a.get("strides", [1] * rank), a.get("dilations", [1] * rank)
    extra = a.get("output_padding", [0] * rank)
    auto_pad = a.get("auto_pad", "NOTSET")
    if not a.get("output_shape") and auto_pad not in _SAME:
        pads = a.get("pads", [0] * 2 * rank) if auto_pad == "NOTSET" else [0] * 2 * rank
        return [(pads[i], pads[i + rank] - extra[i]) for i in range(rank)]
    if any_symbolic(in_dims):
        raise ctx.unsupported(node, "output_shape or SAME auto_pad needs static spatial input sizes")
    out = a["output_shape"][-rank:] if a.get("output_shape") else [i * s for i, s in zip(in_dims, strides, strict=True)]
    crops = []
    for i, k, s, d, e, o in zip(in_dims, kernel, strides, dilations, extra, out, strict=True):
        full = (i - 1) * s + (k - 1) * d + 1
        total = max(full + e - o, 0)
        begin = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
        crops.append((begin, full - begin - o))
    return crops
