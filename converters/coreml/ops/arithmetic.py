"""Elementwise arithmetic with numpy broadcasting."""

from __future__ import annotations

import numpy as np
from coremltools.converters.mil import Builder as mb

from bridge.converters.coreml.registry import register

_BINARY = {"Add": (mb.add, np.add), "Sub": (mb.sub, np.subtract), "Mul": (mb.mul, np.multiply)}


def _binary(mil_op, np_op):
    def convert(ctx, node):
        a, b = ctx.const(node.input[0]), ctx.const(node.input[1])
        if a is not None and b is not None:  # shape arithmetic folds at conversion time
            ctx.set(node.output[0], np_op(a, b))
            return
        ctx.set(node.output[0], mil_op(x=ctx.var(node.input[0]), y=ctx.var(node.input[1]), name=ctx.name(node)))

    return convert


for _name, (_mil, _np) in _BINARY.items():
    register(_name)(_binary(_mil, _np))
