"""Activations: one MIL op each, mostly."""

from __future__ import annotations

from coremltools.converters.mil import Builder as mb

from bridge.converters.coreml.context import attrs
from bridge.converters.coreml.registry import register


def _unary(mil_op):
    def convert(ctx, node):
        ctx.set(node.output[0], mil_op(x=ctx.var(node.input[0]), name=ctx.name(node)))

    return convert


for _onnx, _mil in (("Relu", mb.relu), ("Sigmoid", mb.sigmoid), ("Tanh", mb.tanh)):
    register(_onnx)(_unary(_mil))


@register("LeakyRelu")
def leaky_relu(ctx, node):
    alpha = attrs(node).get("alpha", 0.01)
    ctx.set(node.output[0], mb.leaky_relu(x=ctx.var(node.input[0]), alpha=alpha, name=ctx.name(node)))
