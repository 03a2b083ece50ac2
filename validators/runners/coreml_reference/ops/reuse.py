"""Run coremltools' own numpy semantics of an op (`value_inference`) on runtime values.

coremltools defines most data-movement and simple elementwise ops in numpy for constant folding.
Those definitions read `self.<input>.val`, so we call them on a stand-in for the op whose inputs
carry our arrays: the executor then agrees with coremltools by construction on ops where the
math is only indexing (reshape masks, slice masks, gather with negative indices, ...).

Only ops whose value_inference was read and found exact for every input are registered this
way (see the family modules); the rest are written out.
"""

from __future__ import annotations

import functools
import inspect
import types as pytypes
from collections.abc import Callable

import numpy as np

from . import op


class _Value:
    """Stands in for a MIL Var inside value_inference: value from the executor, type from it."""

    def __init__(self, var, value):
        self._var = var
        self.val = self.sym_val = value

    @property
    def shape(self) -> tuple:
        return tuple(np.shape(self.val))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def dtype(self):
        from coremltools.converters.mil.mil.types.type_mapping import numpy_type_to_builtin_type

        return numpy_type_to_builtin_type(np.asarray(self.val).dtype)

    @property
    def sym_type(self):
        from coremltools.converters.mil.mil import types

        return types.tensor(self.dtype, self.shape) if self.rank else self.dtype

    def __getattr__(self, name):
        return getattr(self._var, name)


class _Bound:
    """The op with its inputs swapped for `_Value`s; methods run with this object as `self`."""

    def __init__(self, mil_op, values: dict):
        wrapped = {}
        for name in mil_op._input_types:  # noqa: SLF001 - value_inference itself reads these
            var, val = mil_op._input_vars.get(name), values.get(name)  # noqa: SLF001
            if var is None:
                wrapped[name] = None
            elif isinstance(var, (list, tuple)):
                wrapped[name] = tuple(_Value(v, x) for v, x in zip(var, val, strict=True))
            else:
                wrapped[name] = _Value(var, val)
        object.__setattr__(self, "_op", mil_op)
        object.__setattr__(self, "_input_vars", wrapped)

    def __getattr__(self, name):
        if name in self._input_vars:
            return self._input_vars[name]
        static = _static_attribute(type(self._op), name)
        if inspect.isfunction(static):
            return pytypes.MethodType(static, self)
        if isinstance(static, property):
            return static.fget(self)
        return getattr(self._op, name)


@functools.cache
def _static_attribute(cls: type, name: str):
    """`name` as defined on op class `cls`, looked up once per class (op classes never change)."""
    return inspect.getattr_static(cls, name, None)


def evaluate(mil_op, values: dict, method: str = "value_inference"):
    """coremltools' `method` of `mil_op`'s class, evaluated on `values` (input name -> array)."""
    result = getattr(_Bound(mil_op, values), method)()
    if result is None:
        raise NotImplementedError(f"coremltools' {method} of {mil_op.op_type} returned nothing for these inputs")
    return result


def reuse(*names: str, method: str = "value_inference", copies_values: bool = False) -> Callable:
    """Register ops `names` as coremltools' own `method` (see module docstring)."""

    def impl(mil_op, **inputs):
        return evaluate(mil_op, inputs, method)

    impl.__name__ = f"coremltools_{method}"
    impl.__doc__ = f"coremltools' own {method} of the op's class, on runtime values."
    return op(*names, copies_values=copies_values)(impl)
