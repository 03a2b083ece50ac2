"""Warnings about the source's numbers: NaN/Inf it yields, and what float16 cannot hold in the
artifacts that compute in it. The lanes' facts quoted here come from their declarations
(`Lane.notes`), never from their code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice

from bridge.base.numerics import FP16_MAX, Constant, Overflow

SHOWN = 3  # tensors named in a warning; the rest are counted


def fp16_warnings(found: Sequence[Overflow | Constant], artifacts: Sequence[FP16Artifact]) -> list[str]:
    """The warnings for what the hub's fp16 check found: one for activations, one for constants
    (they reach different artifacts, at different times)."""
    activations = [f for f in found if isinstance(f, Overflow)]
    constants = constant_warning([f for f in found if isinstance(f, Constant)], artifacts)
    return ([overflow_warning(activations, artifacts)] if activations else []) + ([constants] if constants else [])


@dataclass(frozen=True)
class FP16Artifact:
    """An artifact that computes in float16, with what its lane declares about it."""

    name: str  # "tflite/fp16"
    clamps_constants: bool = False  # stores float constants in float16, clamped to +-65504
    notes: Mapping[str, str] = field(default_factory=dict)  # its lane's notes ("fp16-activations", ...)
    keeps_constants: bool = False  # keeps the constants float16 cannot hold in float32


def overflow_warning(found: Sequence[Overflow], artifacts: Sequence[FP16Artifact]) -> str:
    """One warning: which tensors overflow (the first few), by how much, and which artifacts."""
    notes = _notes(artifacts, "fp16-activations")
    return (f"fp16 overflow: {len(found)} tensor(s) exceed {FP16_MAX:.0f} (the float16 maximum) in magnitude "
            f"on the parity samples (and the calibration data, when given), and become Inf wherever they are "
            f"computed in float16: "
            f"{_listed(map(str, found), len(found))}. Affected: {', '.join(a.name for a in artifacts)}"
            f"{f' ({notes})' if notes else ''}; use fp32 for these or rescale the model")


def constant_warning(found: Sequence[Constant], artifacts: Sequence[FP16Artifact]) -> str | None:
    """One warning, or None when no artifact is hurt. A constant beyond +-65504 hurts only the
    artifacts whose mode stores float constants in float16, clamped, while other lanes say why theirs
    are safe (coremltools computes any op reading such a constant in fp32: its FP16ComputePrecision
    pass; only magnitudes from 1e38, masks' stand-ins for Inf, become Inf on purpose; TFLite's fp16
    files keep such constants in float32). A value that rounds to zero is zero in every fp16 artifact
    but those whose mode keeps such constants in float32."""
    big = [c for c in found if c.overflows]
    clamping = [a for a in artifacts if a.clamps_constants]
    tiny = [c for c in found if c.vanishes]
    rounding = [a for a in artifacts if not a.keeps_constants]
    others = _notes([a for a in artifacts if not a.clamps_constants], "fp16-constants")
    parts = []
    if big and clamping:
        parts.append(f"{len(big)} float constant(s) exceed {FP16_MAX:.0f} (the float16 maximum) in magnitude, and "
                     f"{_notes(clamping, 'fp16-constants')}{f' ({others})' if others else ''}: "
                     f"{_listed((f'{c}: max |x| {c.max_abs:.4g}' for c in big), len(big))}. "
                     f"Affected: {', '.join(a.name for a in clamping)}; rescale the model or use fp32 for these")
    if tiny and rounding:
        parts.append(f"{len(tiny)} single-valued float constant(s) are at or below 2**-25 (half the smallest "
                     "float16 subnormal) and round to zero in float16, where an epsilon no longer keeps a division "
                     f"or square root from 0: {_listed((f'{c}: |x| {c.max_abs:.4g}' for c in tiny), len(tiny))}. "
                     f"Affected: {', '.join(a.name for a in rounding)}")
    return "fp16 constants: " + "; besides, ".join(parts) if parts else None


def _notes(artifacts: Sequence[FP16Artifact], key: str) -> str:
    """The distinct notes the artifacts' lanes declare under `key`, in order."""
    return "; ".join(dict.fromkeys(a.notes[key] for a in artifacts if key in a.notes))


def _listed(items: Iterable[str], total: int) -> str:
    """The first `SHOWN` items, and how many more."""
    shown = "; ".join(islice(items, SHOWN))
    return shown + (f"; and {total - SHOWN} more" if total > SHOWN else "")


def nonfinite_warning(counts: Mapping[str, object]) -> list[str]:
    """The source's own NaN/Inf on the parity samples: no artifact can pass on those outputs."""
    bad = "; ".join(f"{n}: {c}" for n, c in counts.items() if c)
    return [f"the source itself yields NaN/Inf on the parity samples ({bad}): NaN and Inf never count as "
            "equal, so no artifact can pass parity on those outputs"] if bad else []


FLAT = 1e-6  # an output whose samples differ by less than this (relative) does not depend on its input


def flat_outputs(outputs: Mapping[str, Iterable]) -> list[str]:
    """A warning per source output that barely varies over the parity samples: parity against a
    reference that ignores its input proves little (an untrained net whose softmax gives every
    class 1/N, features that collapse to zero, or samples that never reach the model's range).
    `outputs`: name -> that output's samples (read twice, one sample at a time)."""
    import numpy as np

    warnings = []
    for name, column in outputs.items():
        total, count = None, 0
        for x in column:
            x = np.asarray(x, np.float64)
            if not np.isfinite(x).all() or total is not None and x.shape != total.shape:
                total = None  # NaN is reported on its own; a second size (dynamic axes) has no common mean
                break
            total, count = (x.copy(), 1) if total is None else (total + x, count + 1)
        if total is None or count < 2 or total.size == 0:
            continue
        mean = total / count
        spread = sum(float(np.sum((np.asarray(x, np.float64) - mean) ** 2)) for x in column)
        scale = float(np.sum(mean ** 2)) * count
        if scale > 0 and (spread / scale) ** 0.5 < FLAT or scale == 0 and spread == 0:
            ratio = (spread / scale) ** 0.5 if scale > 0 else 0.0
            warnings.append(f"the source's output {name} barely varies over the {count} parity samples (relative "
                            f"spread {ratio:.1e}): parity of {name} proves little; the model may ignore its input "
                            "(untrained weights?) or the samples may not look like its inputs (give --parity-data)")
    return warnings
