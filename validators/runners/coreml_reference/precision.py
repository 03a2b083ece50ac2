"""Rounding to float16 while staying in float32.

fp16 programs keep their tensors as float32 arrays holding float16 values (see executor). numpy's
float32 -> float16 -> float32 casts cost more than most ops, so the rounding is done on the bits:
round the 13 low mantissa bits away, half to even, which is exact for every value in float16's
normal range; the few values outside it (fp16 subnormals, overflow to inf, NaN) are fixed up
afterwards. The result equals `a.astype(np.float16).astype(np.float32)` bit for bit (tested over
every float16 value, every midpoint between neighbours and their float32 neighbours).
"""

from __future__ import annotations

import numpy as np

_FP16_MAX = np.float32(65504.0)
_FP16_MIN_NORMAL = np.float32(2.0**-14)
_SUBNORMAL_STEP = np.float32(2.0**-24)


def round_to_fp16(a: np.ndarray) -> np.ndarray:
    """The float16 value nearest to each element of float32 `a` (ties to even), as float32."""
    a = np.asarray(a, dtype=np.float32)
    bits = a.view(np.uint32).copy()
    carry = bits >> 13
    carry &= 1
    carry += 0x0FFF  # below half rounds down, above half up, exactly half up only when the kept LSB is odd
    bits += carry
    bits &= np.uint32(0xFFFFE000)
    out = bits.view(np.float32)
    if out.size == 0:
        return out
    magnitude = np.abs(a)
    small = magnitude < _FP16_MIN_NORMAL
    small &= magnitude != 0  # zeros (plentiful after relu) are already exact
    if small.any():  # fp16 subnormals are multiples of 2^-24; scaling by 2^24 is exact in float32
        out[small] = np.round(a[small] / _SUBNORMAL_STEP) * _SUBNORMAL_STEP
    if not magnitude.max() <= _FP16_MAX:  # overflow to inf, or NaN present
        out[np.abs(out) > _FP16_MAX] = np.copysign(np.inf, a[np.abs(out) > _FP16_MAX])
        nan = np.isnan(a)
        out[nan] = a[nan]
    return out
