"""Elementwise arithmetic, comparison, logic, math and cast.

coremltools' value_inference for these is one numpy call each (operator.add, np.maximum, np.floor,
...) with numpy broadcasting, which is MIL's broadcasting: reused as is. `erf` is written out
because coremltools evaluates it with a Python loop over `math.erf`.
"""

from __future__ import annotations

import math

import numpy as np

from . import op
from .reuse import reuse

reuse("add", "sub", "mul", "real_div", "pow", "maximum", "minimum", "floor_div", "mod",
      "equal", "not_equal", "less", "less_equal", "greater", "greater_equal",
      "logical_and", "logical_or", "logical_xor", "logical_not", "select")
reuse("abs", "acos", "asin", "atan", "atanh", "ceil", "cos", "cosh", "exp", "exp2", "floor", "round",
      "sign", "sin", "sinh", "sqrt", "square", "tan", "tanh", "clip", "threshold",
      "inverse", "log", "rsqrt", "cast")


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
