"""Pooling: avg_pool, max_pool, l2_pool with every pad type, ceil_mode and
exclude_padding_from_average.

Output sizes follow coremltools' `spatial_dimensions_out_shape` (the sizes written in the file).
In ceil mode the last window may hang past the explicit padding; as in PyTorch (whose ceil_mode
coremltools maps here), that overhang is neither summed nor counted in an average.
"""

from __future__ import annotations

import numpy as np

from . import op
from .conv import offsets, pad_spatial, per_dim, spatial_pads


def _out_sizes(in_sp, kernel, strides, before, after, ceil_mode: bool) -> list[int]:
    out = []
    for i, k, s, b, a in zip(in_sp, kernel, strides, before, after, strict=True):
        total = b + a
        if not ceil_mode:
            out.append((i + total - k) // s + 1)
            continue
        o = (i + total - k + s - 1) // s + 1
        out.append(o - 1 if (o - 1) * s >= i + total / 2 and total > 0 else o)
    return out


def _reduce_windows(x, kernel, strides, before, out_sp, fill, ufunc) -> np.ndarray:
    """`ufunc`-reduce every pooling window of `x` padded with `fill`: explicit padding, then the
    ceil-mode overhang (or a crop where the last windows stop short of the end). One strided view
    per kernel offset, combined in place."""
    need = [(o - 1) * s + k for o, s, k in zip(out_sp, strides, kernel, strict=True)]
    tail = [max(nd - i - b, 0) for nd, i, b in zip(need, x.shape[2:], before, strict=True)]
    xp = pad_spatial(x, before, tail, fill)
    acc = None
    for k in offsets(kernel):
        view = xp[(slice(None), slice(None), *(slice(ki, ki + (o - 1) * s + 1, s)
                                               for ki, o, s in zip(k, out_sp, strides, strict=True)))]
        acc = view.copy() if acc is None else ufunc(acc, view, out=acc)
    return acc


def _geometry(x, kernel_sizes, strides, pad_type, pad, ceil_mode):
    kernel = per_dim(kernel_sizes, x.ndim - 2)
    strides = per_dim(strides, len(kernel))
    before, after = spatial_pads(pad_type, pad, x.shape[2:], kernel, strides, [1] * len(kernel))
    return kernel, strides, before, after, _out_sizes(x.shape[2:], kernel, strides, before, after, bool(ceil_mode))


@op("max_pool", copies_values=True)
def max_pool(x, kernel_sizes, strides=None, pad_type="valid", pad=None, ceil_mode=False):
    kernel, strides, before, after, out_sp = _geometry(x, kernel_sizes, strides, pad_type, pad, ceil_mode)
    return _reduce_windows(x, kernel, strides, before, out_sp, -np.inf, np.maximum)


@op("avg_pool")
def avg_pool(x, kernel_sizes, strides=None, pad_type="valid", pad=None, exclude_padding_from_average=False,
             ceil_mode=False):
    kernel, strides, before, after, out_sp = _geometry(x, kernel_sizes, strides, pad_type, pad, ceil_mode)
    total = _reduce_windows(x, kernel, strides, before, out_sp, 0, np.add)
    if not any(before + after) and not ceil_mode:  # every window lies inside x
        return total / np.prod(kernel)
    ones = np.ones((1, 1, *x.shape[2:]), dtype=x.dtype)
    if not exclude_padding_from_average:  # explicit padding counts; the ceil-mode overhang never does
        ones = pad_spatial(ones, before, after, 1)
        before = [0] * len(kernel)  # the padding is already part of `ones`
    count = _reduce_windows(ones, kernel, strides, before, out_sp, 0, np.add)
    return total / count


@op("l2_pool")
def l2_pool(x, kernel_sizes, strides=None, pad_type="valid", pad=None, ceil_mode=False):
    kernel, strides, before, after, out_sp = _geometry(x, kernel_sizes, strides, pad_type, pad, ceil_mode)
    return np.sqrt(_reduce_windows(x**2, kernel, strides, before, out_sp, 0, np.add))
