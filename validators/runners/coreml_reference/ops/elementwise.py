"""Elementwise arithmetic, comparison, logic, math and cast.

coremltools' value_inference for these is one numpy call each (operator.truediv, np.maximum,
np.floor, ...) with numpy broadcasting, which is MIL's broadcasting: reused as is. `erf` is written out
because coremltools evaluates it with a Python loop over `math.erf`. A few that every network runs
are written out for speed, with the same numpy: add, sub and mul (coremltools' evaluation costs
more than the arithmetic on small tensors, then copies the result), clip (numpy's max/min against a
scalar take twice as long as its single clip pass; same values: NaN propagates, signed zeros
agree), and cast between floats, which leaves the rounding to the executor.
"""

from __future__ import annotations

import math

import numpy as np

from . import op
from .reuse import evaluate, reuse

reuse("maximum", "minimum", copies_values=True)
reuse("real_div", "pow", "floor_div", "mod",
      "equal", "not_equal", "less", "less_equal", "greater", "greater_equal",
      "logical_and", "logical_or", "logical_xor", "logical_not", "select")
reuse("abs", "acos", "asin", "atan", "atanh", "ceil", "cos", "cosh", "exp", "exp2", "floor", "round",
      "sign", "sin", "sinh", "sqrt", "square", "tan", "tanh", "threshold",
      "inverse", "log", "rsqrt")


@op("add")
def add(x, y):
    return x + y


@op("sub")
def sub(x, y):
    return x - y


@op("mul")
def mul(x, y):
    return x * y


@op("clip", copies_values=True)
def clip(x, alpha, beta):
    return np.clip(x, alpha, beta)  # = np.minimum(np.maximum(x, alpha), beta), coremltools' definition


@op("cast")
def cast(mil_op, x, dtype):
    """Float to float returns `x`: the executor rounds every result to its declared dtype, which
    gives the bits of numpy's float16 cast without its cost. Other casts are coremltools' own."""
    if dtype in ("fp16", "fp32") and np.asarray(x).dtype == np.float32:
        return x
    return evaluate(mil_op, {"x": x, "dtype": dtype})


@op("erf")
def erf(x):
    return erf_array(x)


def erf_array(x: np.ndarray) -> np.ndarray:
    """Vectorized erf: scipy's when installed (it comes with scikit-learn, part of the coreml
    extra), otherwise math.erf per element."""
    try:
        from scipy.special import erf as scipy_erf
    except ImportError:
        return np.vectorize(math.erf, otypes=[np.float64])(x).astype(np.asarray(x).dtype)
    return scipy_erf(x)
