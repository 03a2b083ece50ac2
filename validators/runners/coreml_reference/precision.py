"""Rounding to float16 while staying in float32.

fp16 programs keep their tensors as float32 arrays holding float16 values (see executor). numpy's
float32 -> float16 -> float32 casts cost more than most ops, so the rounding is done in float32
arithmetic: Veltkamp's splitting (`s = a * (2^13 + 1)`, then `s - (s - a)`) leaves the 11 leading
significant bits of `a`, rounded to nearest with ties to even, which is float16's rounding for
every value in its normal range (binary scaling commutes with it, and it equals the casts on every
float32 in [1, 2)). The rare values outside that range (fp16 subnormals, overflow to inf, NaN) are
fixed up afterwards. The result equals `a.astype(np.float16).astype(np.float32)` bit for bit
(tested over every float16 value, every midpoint between neighbours and their float32 neighbours,
and every float32 significand; all 2^32 float32 values were compared once, offline).
"""

from __future__ import annotations

import numpy as np

_SPLIT = np.float32(2**13 + 1)  # keeps 24 - 13 = 11 significant bits
_FP16_MAX = np.float32(65504.0)
_FP16_MIN_NORMAL_BITS_LESS_1 = np.uint32(0x38800000 - 1)  # 2^-14
_SUBNORMAL_STEP = np.float32(2.0**-24)


def round_to_fp16(a: np.ndarray) -> np.ndarray:
    """The float16 value nearest to each element of float32 `a` (ties to even), as float32."""
    a = np.asarray(a, dtype=np.float32)
    if a.ndim == 0:
        return round_to_fp16(a.reshape(1)).reshape(())
    if a.size == 0:
        return a.copy()
    scratch = np.abs(a)
    overflow = not scratch.max() <= _FP16_MAX  # overflow to inf, or NaN present
    bits = scratch.view(np.uint32)
    bits -= np.uint32(1)  # zeros (plentiful after relu) wrap to the top: exact, never fixed up
    small = np.flatnonzero(bits < _FP16_MIN_NORMAL_BITS_LESS_1) if bits.min() < _FP16_MIN_NORMAL_BITS_LESS_1 else None
    if overflow:
        with np.errstate(over="ignore", invalid="ignore"):  # a * _SPLIT overflows from about 4e34
            out = _split(a, scratch)
            _fix_overflow(a, out)
    else:
        out = _split(a, scratch)
    if small is not None:
        out.reshape(-1)[small] = _subnormal(a.reshape(-1)[small])
    return out


def _split(a: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    """Veltkamp: `s - (s - a)` with `s = a * (2^13 + 1)`; this order keeps -0.0 (`a - s + s` would not)."""
    out = a * _SPLIT
    np.subtract(out, a, out=scratch)
    out -= scratch
    return out


def _fix_overflow(a: np.ndarray, out: np.ndarray) -> None:
    over = ~(np.abs(out) <= _FP16_MAX)  # NaN too, where `a * _SPLIT` overflowed
    out[over] = np.copysign(np.inf, a[over])
    nan = np.isnan(a)
    out[nan] = a[nan]


def _subnormal(a: np.ndarray) -> np.ndarray:
    """fp16 subnormals are multiples of 2^-24; scaling by 2^24 is exact in float32."""
    return np.round(a / _SUBNORMAL_STEP) * _SUBNORMAL_STEP
