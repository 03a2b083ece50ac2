"""Gather and scatter. gather and gather_along_axis are coremltools' own (np.take with batch_dims,
np.take_along_axis); gather_nd and the scatters are written out, because coremltools has no numpy
form for them or ignores `mode` (scatter_along_axis)."""

from __future__ import annotations

import numpy as np

from . import op
from .reuse import reuse

reuse("gather", "gather_along_axis")

_MODES = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "max": np.maximum,
          "min": np.minimum}


def _scatter_into(data: np.ndarray, index: tuple, updates: np.ndarray, mode: str) -> np.ndarray:
    """`data` with `updates` combined in at `index` by `mode`; repeated indices accumulate."""
    out = data.copy()
    if mode == "update":
        out[index] = updates
    elif mode in _MODES:
        _MODES[mode].at(out, index, updates)
    else:
        raise NotImplementedError(f"scatter mode {mode}")
    return out


@op("gather_nd")
def gather_nd(x, indices, batch_dims=0, validate_indices=False):
    b = int(batch_dims)
    if b == 0:
        return x[tuple(np.moveaxis(indices, -1, 0))]
    batch = int(np.prod(x.shape[:b]))
    xs, idx = x.reshape(batch, *x.shape[b:]), indices.reshape(batch, -1, indices.shape[-1])
    out = np.stack([xi[tuple(np.moveaxis(ii, -1, 0))] for xi, ii in zip(xs, idx, strict=True)])
    return out.reshape(*indices.shape[:-1], *x.shape[b + indices.shape[-1]:])


@op("scatter")
def scatter(data, indices, updates, axis=0, mode="update", validate_indices=False):
    axis = int(axis) % data.ndim
    moved = _scatter_into(np.moveaxis(data, axis, 0), (indices,), np.moveaxis(updates, axis, 0), mode)
    return np.moveaxis(moved, 0, axis)


@op("scatter_nd")
def scatter_nd(data, indices, updates, mode="add", validate_indices=False):
    return _scatter_into(data, tuple(np.moveaxis(indices, -1, 0)), updates, mode)


@op("scatter_along_axis")
def scatter_along_axis(data, indices, updates, axis=0, mode="add", validate_indices=False):
    axis = int(axis) % data.ndim
    index = list(np.indices(indices.shape, sparse=True))
    index[axis] = indices
    return _scatter_into(data, tuple(index), updates, mode)
