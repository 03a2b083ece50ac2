"""Convolution and transposed convolution, 1-D to 3-D, all MIL pad types, groups and dilation.

Written in numpy (no torch, which the coreml extra does not install): im2col and BLAS GEMMs for
conv, one tensordot per kernel offset scattered into the output for conv_transpose. Every way of
building the columns gives the same matrix, so the GEMMs, and the results, are the same bits.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np

from . import op


def spatial_pads(pad_type: str, pad, in_sizes, kernel, strides, dilations) -> tuple[list[int], list[int]]:
    """(before, after) padding per spatial dim as MIL defines `pad_type`: `same` puts the odd
    pixel after, `same_lower` before (coremltools' `aggregated_pad` gives the same totals)."""
    n = len(kernel)
    if pad_type == "valid":
        return [0] * n, [0] * n
    if pad_type == "custom":
        pad = [int(p) for p in np.ravel(pad).tolist()]
        return pad[0::2], pad[1::2]
    if pad_type not in ("same", "same_lower"):
        raise NotImplementedError(f"pad_type {pad_type}")
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    total = [max(0, (math.ceil(i / s) - 1) * s + e - i) for i, s, e in zip(in_sizes, strides, eff, strict=True)]
    low, high = [t // 2 for t in total], [t - t // 2 for t in total]
    return (low, high) if pad_type == "same" else (high, low)


def per_dim(value, n: int, default: int = 1) -> list[int]:
    """A per-spatial-dim parameter (strides, dilations) as a list of ints."""
    return [default] * n if value is None else [int(v) for v in np.ravel(value).tolist()]


def pad_spatial(x: np.ndarray, before, after, value=0) -> np.ndarray:
    """`x` with its spatial axes (2 onward) padded by `value` (np.pad's generic path costs more
    than the convolution on small tensors)."""
    if not any(before) and not any(after):
        return x
    out = np.full((*x.shape[:2], *(s + b + a for s, b, a in zip(x.shape[2:], before, after, strict=True))), value,
                  dtype=x.dtype)
    out[(slice(None), slice(None), *(slice(b, b + s) for b, s in zip(before, x.shape[2:], strict=True)))] = x
    return out


def offsets(kernel) -> list[tuple[int, ...]]:
    """Every kernel offset, row-major (np.ndindex order)."""
    return list(itertools.product(*(range(k) for k in kernel)))


def correlate(x: np.ndarray, w: np.ndarray, strides, dilations, groups: int) -> np.ndarray:
    """Cross-correlation of an already padded `x` [N, C, *S] with `w` [M, C/groups, *K]: the
    kernel-offset windows of `x` copied into columns (im2col), then one batched GEMM per group."""
    n, (m, cg), kernel = x.shape[0], w.shape[:2], w.shape[2:]
    out_sp = tuple((x.shape[2 + i] - (k - 1) * d - 1) // s + 1
                   for i, (k, d, s) in enumerate(zip(kernel, dilations, strides, strict=True)))
    size = math.prod(kernel)
    cols = _columns(x, kernel, tuple(strides), tuple(dilations), out_sp).reshape(n, groups, cg * size, -1)
    out = np.matmul(w.reshape(groups, m // groups, cg * size), cols)  # [N, G, M/G, P]
    return out.reshape(n, m, *out_sp)


def _columns(x: np.ndarray, kernel, strides, dilations, out_sp) -> np.ndarray:
    """im2col, [N, C, K, *out_sp]. A 1x1 kernel at stride 1 needs no copy: `x` already is its
    columns. Otherwise a sliced copy per kernel offset, which numpy runs a row at a time, or, for
    rows this short (deep layers: 3x3 to 12x12 maps), one gather, which is faster."""
    if math.prod(kernel) == 1 and all(s == 1 for s in strides):
        return x
    build = gathered_columns if out_sp[-1] < _SHORT_ROW else sliced_columns
    return build(x, kernel, strides, dilations, out_sp)


_SHORT_ROW = 16  # output rows shorter than this are gathered (measured on MobileNet's depthwise layers)


def sliced_columns(x: np.ndarray, kernel, strides, dilations, out_sp) -> np.ndarray:
    """One strided copy per kernel offset: numpy pays per output row, then per element."""
    cols = np.empty((*x.shape[:2], math.prod(kernel), *out_sp), dtype=x.dtype)
    for j, k in enumerate(offsets(kernel)):
        cols[:, :, j] = x[(slice(None), slice(None), *(slice(ki * d, ki * d + (o - 1) * s + 1, s)
                                                      for ki, d, o, s in zip(k, dilations, out_sp, strides,
                                                                             strict=True)))]
    return cols


def gathered_columns(x: np.ndarray, kernel, strides, dilations, out_sp) -> np.ndarray:
    """One np.take over cached window positions: a cost per element, however short the rows."""
    index = _window_index(x.shape[2:], kernel, strides, dilations, out_sp)
    return np.take(x.reshape(*x.shape[:2], -1), index, axis=2, mode="wrap")  # all in range: "wrap" skips checks


@functools.lru_cache(maxsize=256)
def _window_index(in_sp, kernel, strides, dilations, out_sp) -> np.ndarray:
    """Flat position in a [*in_sp] map of every window element, [K, *out_sp] (offsets row-major)."""
    n = len(kernel)
    index = np.zeros((1,) * (2 * n), dtype=np.intp)
    for i, (k, s, d, o) in enumerate(zip(kernel, strides, dilations, out_sp, strict=True)):
        pos = np.arange(k)[:, None] * d + np.arange(o)[None, :] * s  # [k_i, o_i]
        shape = [1] * (2 * n)
        shape[i], shape[n + i] = k, o
        index = index + pos.reshape(shape) * math.prod(in_sp[i + 1:])
    index = index.reshape(math.prod(kernel), *out_sp)
    index.flags.writeable = False
    return index


def _add_bias(y: np.ndarray, bias) -> np.ndarray:
    """`y + bias` per channel, in place: `y` is always this op's own fresh result."""
    if bias is None:
        return y
    bias = np.reshape(bias, (-1,) + (1,) * (y.ndim - 2))
    if bias.dtype != y.dtype:
        return y + bias
    y += bias
    return y


@op("conv")
def conv(x, weight, bias=None, strides=None, pad_type="valid", pad=None, dilations=None, groups=1):
    n = weight.ndim - 2
    strides, dilations = per_dim(strides, n), per_dim(dilations, n)
    before, after = spatial_pads(pad_type, pad, x.shape[2:], weight.shape[2:], strides, dilations)
    x = pad_spatial(x, before, after)
    return _add_bias(correlate(x, weight, strides, dilations, int(groups)), bias)


def _scatter_transpose(x: np.ndarray, w: np.ndarray, strides, dilations, groups: int) -> np.ndarray:
    """The full (uncropped) transposed convolution of `x` [N, C, *S] with `w` [C, M/groups, *K]:
    each input pixel adds its kernel-weighted copy at stride spacing."""
    c, mg = w.shape[:2]
    cg, sp = c // groups, x.shape[2:]
    full = [(i - 1) * s + (k - 1) * d + 1 for i, s, k, d in zip(sp, strides, w.shape[2:], dilations, strict=True)]
    out = np.zeros((x.shape[0], mg * groups, *full), dtype=np.result_type(x, w))
    for k in offsets(w.shape[2:]):
        window = tuple(slice(ki * d, ki * d + (i - 1) * s + 1, s)
                       for ki, d, i, s in zip(k, dilations, sp, strides, strict=True))
        for g in range(groups):
            part = np.tensordot(x[:, g * cg:(g + 1) * cg], w[(slice(g * cg, (g + 1) * cg), slice(None), *k)],
                                axes=([1], [0]))
            out[(slice(None), slice(g * mg, (g + 1) * mg), *window)] += np.moveaxis(part, -1, 1)
    return out


@op("conv_transpose")
def conv_transpose(x, weight, bias=None, pad=None, output_shape=None, pad_type="valid", strides=None,
                   dilations=None, groups=1):
    n = weight.ndim - 2
    strides, dilations = per_dim(strides, n), per_dim(dilations, n)
    y = _scatter_transpose(x, weight, strides, dilations, int(groups))
    full = y.shape[2:]
    if pad_type == "custom":
        start = [int(p) for p in pad[0::2]]
        size = [f - int(b) - int(a) for f, b, a in zip(full, pad[0::2], pad[1::2], strict=True)]
    elif pad_type == "same":  # TF's rule: out = in * stride, the odd pixel cropped after
        size = [i * s for i, s in zip(x.shape[2:], strides, strict=True)]
        start = [max(f - z, 0) // 2 for f, z in zip(full, size, strict=True)]
    elif pad_type == "valid":
        start, size = [0] * n, list(full)
    else:
        raise NotImplementedError(f"pad_type {pad_type}")
    if output_shape is not None:
        size = [int(v) for v in np.ravel(output_shape)[2:]]
    extra = [max(0, b + z - f) for b, z, f in zip(start, size, full, strict=True)]  # output_padding rows
    y = np.pad(y, [(0, 0), (0, 0), *((0, e) for e in extra)])
    y = y[(slice(None), slice(None), *(slice(b, b + z) for b, z in zip(start, size, strict=True)))]
    return _add_bias(y, bias)
