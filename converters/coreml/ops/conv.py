"""Convolutions."""

from __future__ import annotations

from coremltools.converters.mil import Builder as mb

from bridge.converters.coreml.context import attrs
from bridge.converters.coreml.registry import register


@register("Conv")
def conv(ctx, node):
    a = attrs(node)
    weight = ctx.var(node.input[1])
    rank = len(weight.shape) - 2
    auto_pad = a.get("auto_pad", "NOTSET")
    kwargs = {"strides": a.get("strides", [1] * rank), "dilations": a.get("dilations", [1] * rank),
              "groups": a.get("group", 1)}
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        kwargs["pad_type"] = "same" if auto_pad == "SAME_UPPER" else "same_lower"
    elif auto_pad == "VALID":
        kwargs["pad_type"] = "valid"
    else:
        pads = a.get("pads", [0] * 2 * rank)
        kwargs["pad_type"] = "custom"
        kwargs["pad"] = [p for i in range(rank) for p in (pads[i], pads[i + rank])]
    bias = ctx.optional(node, 2)
    if bias is not None:
        kwargs["bias"] = bias
    ctx.set(node.output[0], mb.conv(x=ctx.var(node.input[0]), weight=weight, name=ctx.name(node), **kwargs))
