"""Activations. The one-line numpy forms in coremltools are reused; gelu, silu, elu and
thresholded_relu are written out (coremltools evaluates exact gelu with a Python loop, has no
numpy silu, and its elu/thresholded_relu write into their input array)."""

from __future__ import annotations

import numpy as np

from . import op
from .elementwise import erf_array
from .reuse import reuse

reuse("relu", "relu6", copies_values=True)
reuse("sigmoid", "softsign", "softplus", "leaky_relu", "clamped_relu", "linear_activation", "prelu", "scaled_tanh",
      "sigmoid_hard", "softplus_parametric", "softmax")


@op("silu")
def silu(x):
    return x / (1 + np.exp(-x))


@op("gelu")
def gelu(x, mode="EXACT"):
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x / (1 + np.exp(-1.702 * x))
    if mode != "EXACT":
        raise NotImplementedError(f"gelu mode {mode}")
    return 0.5 * x * (1 + erf_array(x / np.sqrt(2)))


@op("elu")
def elu(x, alpha=1.0):
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))


@op("thresholded_relu")
def thresholded_relu(x, alpha=1.0):
    return np.where(x >= alpha, x, 0).astype(x.dtype)
