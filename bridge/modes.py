"""Quantization modes and their parity thresholds: one vocabulary for every lane.

Which lane supports which mode is declared by the lane (`bridge.converters.LANES`); what each mode
must achieve to pass parity is declared here, once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum


class Mode(StrEnum):
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
_WEIGHT_ONLY = Thresholds(snr_db_min=20.0)
_FULL_INT = Thresholds(snr_db_min=15.0, cosine_min=0.98)
DEFAULT_THRESHOLDS: dict[Mode, Thresholds] = {
    Mode.FP32: Thresholds(rel_l2_max=1e-4),
    Mode.FP16: Thresholds(snr_db_min=30.0),
    Mode.DYNAMIC_INT8: _WEIGHT_ONLY,
    Mode.INT8_WEIGHTS: _WEIGHT_ONLY,
    Mode.PALETTIZE_8: _WEIGHT_ONLY,
    Mode.PALETTIZE_6: _WEIGHT_ONLY,
    Mode.INT16X8: _WEIGHT_ONLY,
    Mode.INT8: _FULL_INT,
    Mode.INT8_IO: _FULL_INT,
    Mode.PALETTIZE_4: _FULL_INT,
    Mode.INT4_WEIGHTS: _FULL_INT,
}

# Modes whose converter needs calibration samples (activation ranges).
CALIBRATED = frozenset({Mode.INT8, Mode.INT8_IO, Mode.INT16X8})


def parse_mode(text: str) -> Mode:
    from bridge.errors import UsageError

    try:
        return Mode(text.strip().lower())
    except ValueError:
        valid = ", ".join(m.value for m in Mode)
        raise UsageError(f"unknown quantization mode {text!r}; valid modes: {valid}") from None
