"""Normalizations: batch_norm, instance_norm, layer_norm, local_response_norm (written out) and
l2_norm (coremltools' value_inference: batch-wise over the last three axes, as MIL defines it).
Variances are population variances, as in every framework these ops come from."""

from __future__ import annotations

import numpy as np

from . import op
from .reuse import reuse

reuse("l2_norm")


def _per_channel(v, rank: int):
    return None if v is None else np.reshape(v, (-1,) + (1,) * (rank - 2))


def _scale_shift(y, gamma, beta):
    if gamma is not None:
        y = y * gamma
    return y if beta is None else y + beta


@op("batch_norm")
def batch_norm(x, mean, variance, gamma=None, beta=None, epsilon=1e-5):
    r = x.ndim
    y = (x - _per_channel(mean, r)) / np.sqrt(_per_channel(variance, r) + epsilon)
    return _scale_shift(y, _per_channel(gamma, r), _per_channel(beta, r))


@op("instance_norm")
def instance_norm(x, gamma=None, beta=None, epsilon=1e-5):
    axes = tuple(range(2, x.ndim))
    y = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True) + epsilon)
    return _scale_shift(y, _per_channel(gamma, x.ndim), _per_channel(beta, x.ndim))


@op("layer_norm")
def layer_norm(x, axes=None, gamma=None, beta=None, epsilon=1e-5):
    axes = sorted(range(x.ndim) if axes is None else {int(a) % x.ndim for a in np.ravel(axes)})
    shape = [x.shape[i] if i in axes else 1 for i in range(x.ndim)]  # gamma/beta span the normalized axes
    y = (x - x.mean(axis=tuple(axes), keepdims=True)) / np.sqrt(x.var(axis=tuple(axes), keepdims=True) + epsilon)
    return _scale_shift(y, None if gamma is None else np.reshape(gamma, shape),
                        None if beta is None else np.reshape(beta, shape))


@op("local_response_norm")
def local_response_norm(x, size, alpha=1e-4, beta=0.75, k=1.0):
    """Sum of squares over `size` neighbouring channels, centred as PyTorch does (size // 2
    before, the rest after), zero outside the channel range."""
    size = int(size)
    sq = np.pad(x**2, [(0, 0), (size // 2, (size - 1) // 2)] + [(0, 0)] * (x.ndim - 2))
    window = sum(sq[:, i:i + x.shape[1]] for i in range(size))
    return x / (k + alpha / size * window) ** beta
