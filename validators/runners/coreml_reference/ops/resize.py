"""Spatial resizing: nearest and bilinear, by scale factor or target size, plus iOS17 `resize`.

Bilinear is separable, so each resized axis is interpolated in turn. Sample positions follow the
`sampling_mode` table in coremltools' resize_bilinear docstring (MIL's definition); upsample_* ops
recompute their scale from the output size, as that docstring says they do. crop_resize is not
implemented (the executor refuses files that use it).
"""

from __future__ import annotations

import numpy as np

from . import op


def sample_positions(n_in: int, n_out: int, mode: str) -> np.ndarray:
    """Where output pixel i samples the input axis, for each MIL `sampling_mode`."""
    i = np.arange(n_out, dtype=np.float64)
    if mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS"):
        if n_out == 1:
            pos = np.array([0.0 if mode == "STRICT_ALIGN_CORNERS" else (n_in - 1) / 2])
        else:
            pos = i * (n_in - 1) / (n_out - 1)
    elif mode == "DEFAULT":
        pos = i * n_in / n_out
    elif mode == "OFFSET_CORNERS":
        delta = max(1, n_in - 1) / n_out
        pos = 0.5 * delta + i * delta
    elif mode == "UNALIGN_CORNERS":
        pos = (i + 0.5) * n_in / n_out - 0.5
    else:
        raise NotImplementedError(f"sampling_mode {mode}")
    return np.clip(pos, 0, n_in - 1)


def _linear(x: np.ndarray, axis: int, n_out: int, mode: str) -> np.ndarray:
    n_in = x.shape[axis]
    pos = sample_positions(n_in, n_out, mode)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    t = (pos - lo).reshape((-1,) + (1,) * (x.ndim - 1 - axis % x.ndim)).astype(x.dtype)
    a, b = np.take(x, lo, axis=axis), np.take(x, hi, axis=axis)
    return a + (b - a) * t


def _nearest(x: np.ndarray, axis: int, n_out: int) -> np.ndarray:
    """Output pixel i copies input pixel floor(i * n_in / n_out)."""
    n_in = x.shape[axis]
    return np.take(x, np.minimum(np.arange(n_out) * n_in // n_out, n_in - 1), axis=axis)


def _scaled(size: int, factor) -> int:
    return int(np.floor(size * float(factor)))


@op("upsample_nearest_neighbor")
def upsample_nearest_neighbor(x, scale_factor_height=1, scale_factor_width=1):
    h, w = x.shape[-2:]
    return _nearest(_nearest(x, -2, _scaled(h, scale_factor_height)), -1, _scaled(w, scale_factor_width))


@op("resize_nearest_neighbor")
def resize_nearest_neighbor(x, target_size_height, target_size_width):
    return _nearest(_nearest(x, -2, int(target_size_height)), -1, int(target_size_width))


@op("upsample_bilinear")
def upsample_bilinear(x, scale_factor_height=1, scale_factor_width=1, align_corners=True, half_pixel_centers=None):
    """align_corners: corner-aligned grid; otherwise half-pixel centers (iOS16 may turn them off,
    leaving TF's legacy `i * in / out`)."""
    half_pixel = not align_corners if half_pixel_centers is None else bool(half_pixel_centers)
    mode = "STRICT_ALIGN_CORNERS" if align_corners else ("UNALIGN_CORNERS" if half_pixel else "DEFAULT")
    h, w = x.shape[-2:]
    return _linear(_linear(x, -2, _scaled(h, scale_factor_height), mode), -1, _scaled(w, scale_factor_width), mode)


@op("resize_bilinear")
def resize_bilinear(x, target_size_height=1, target_size_width=1, sampling_mode="DEFAULT"):
    return _linear(_linear(x, -2, int(target_size_height), sampling_mode), -1, int(target_size_width), sampling_mode)


@op("resize")
def resize(x, shape, resized_dims, interpolation_mode="LINEAR", sampling_mode="DEFAULT"):
    """iOS17: the last `resized_dims` axes take their sizes from the end of `shape` (0 keeps x's)."""
    k = int(resized_dims)
    sizes = [int(s) for s in np.ravel(shape)[len(np.ravel(shape)) - k:]]
    if interpolation_mode == "NEAREST_NEIGHBOR" and sampling_mode != "DEFAULT":
        raise NotImplementedError(f"resize NEAREST_NEIGHBOR with sampling_mode {sampling_mode}")
    for axis, size in zip(range(x.ndim - k, x.ndim), sizes, strict=True):
        if size == 0:
            continue
        x = _nearest(x, axis, size) if interpolation_mode == "NEAREST_NEIGHBOR" else _linear(x, axis, size,
                                                                                               sampling_mode)
    return x
