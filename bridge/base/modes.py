"""Quantization modes as data: a mode is a name, and each lane declares the modes it offers in one
table of `ModeSpec` rows (what the mode must achieve, whether it needs calibration, whether it
computes in fp16, its lane-specific configuration). Everything else is derived from those tables.

The parity thresholds of the built-in modes are defined here once, with the reasons, so lanes that
offer the same mode judge it the same way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum


class Mode(StrEnum):
    """The built-in mode names. A lane may declare others (a mode is any string)."""

    FP32 = "fp32"
    FP16 = "fp16"
    DYNAMIC_INT8 = "dynamic-int8"
    INT8_WEIGHTS = "int8-weights"
    INT8 = "int8"
    INT8_IO = "int8-io"
    INT16X8 = "int16x8"
    PALETTIZE_8 = "palettize-8"
    PALETTIZE_6 = "palettize-6"
    PALETTIZE_4 = "palettize-4"
    INT4_WEIGHTS = "int4-weights"
    # a low-precision mode with chosen layers kept in higher precision (the lane's `keep` option)
    FP16_MIXED = "fp16-mixed"
    INT8_MIXED = "int8-mixed"


@dataclass(frozen=True)
class Thresholds:
    """Pass limits for one output. `None` means the metric is reported but not judged."""

    rel_l2_max: float | None = None
    snr_db_min: float | None = None
    cosine_min: float | None = None

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def replace(self, **changes: float) -> Thresholds:
        return Thresholds(**{**asdict(self), **changes})


# Why these numbers (also in the README):
# - fp32 differs from the source only by operation order and fused kernels: relative L2 error
#   stays near 1e-6, so 1e-4 leaves two decades of slack and still catches any real bug.
# - fp16 keeps ~3.3 decimal digits; 30 dB SNR (error power 1/1000 of the signal) is what a
#   correct fp16 graph keeps after dozens of layers.
# - int8 weights (or 8/6-bit look-up tables) with float activations lose ~1/256 of each weight's
#   range: 20 dB is a correct weight-quantized model; a wrong one lands well under 10 dB.
# - full integer and 4-bit modes also quantize activations (or keep 16 weight levels): 15 dB with
#   cosine >= 0.98 requires both small error and the right direction, so neither a scaled output
#   (cosine 1.0, SNR 10 dB at x1.3) nor a noisy one passes.
FP32_PARITY = Thresholds(rel_l2_max=1e-4)
FP16_PARITY = Thresholds(snr_db_min=30.0)
WEIGHT_ONLY = Thresholds(snr_db_min=20.0)
FULL_INT = Thresholds(snr_db_min=15.0, cosine_min=0.98)


@dataclass(frozen=True)
class ModeSpec:
    """One row of a lane's modes table."""

    name: str
    thresholds: Thresholds
    calibrated: bool = False  # the converter needs calibration samples
    fp16_compute: bool = False  # computes in float16: activations beyond 65504 are checked first
    clamps_fp16_constants: bool = False  # stores float constants in float16, clamped to +-65504
    # stores the float constants float16 cannot hold (beyond +-65504, or single values that round
    # to 0) in float32 instead: neither kind changes its numbers
    keeps_fp16_constants: bool = False
    needs_ranges: bool = False  # the lane quantizes with the hub's measured activation ranges
    min_target: str | None = None  # lane-specific minimum deployment target
    # a mixed mode: every layer in this lower precision ("fp16" | "int8") but the ones the lane's
    # `keep` option names; left unnamed, the conversion searches for the fewest (bridge.mixed)
    mixed: str | None = None
    description: str = ""
    config: object = None  # the lane's own settings for this mode (converter flags, compression)
