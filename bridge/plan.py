"""Route planning: which artifacts a run produces and what each must achieve.

Everything here is checked before any conversion runs, so bad usage is exit 2 in milliseconds.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from bridge.converters import LANES
from bridge.errors import UsageError
from bridge.modes import DEFAULT_THRESHOLDS, Mode, Thresholds, parse_mode


@dataclass(frozen=True)
class Route:
    """One artifact to produce: the hub lowered to `target` in `mode`."""

    target: str
    mode: Mode

    def __str__(self) -> str:
        return f"{self.target}/{self.mode}"


def plan_routes(targets: list[str], quantize: list[str]) -> list[Route]:
    """Targets in the order given (onnx first: it is the hub); `--quantize TARGET=MODE[,MODE]`
    replaces that target's default modes."""
    for t in targets:
        if t not in LANES:
            raise UsageError(f"unknown target {t!r}; valid targets: {', '.join(LANES)}")
    chosen: dict[str, list[Mode]] = {}
    for q in quantize:
        target, sep, modes = q.partition("=")
        target = target.strip()
        if not sep or not modes.strip():
            raise UsageError(f"--quantize {q!r}: expected TARGET=MODE[,MODE...], e.g. tflite=fp32,int8")
        if target not in LANES:
            raise UsageError(f"--quantize {q!r}: unknown target {target!r}; valid targets: {', '.join(LANES)}")
        lane = LANES[target]
        for text in modes.split(","):
            mode = parse_mode(text)
            if mode not in lane.modes:
                raise UsageError(f"--quantize {q!r}: {target} has no mode {mode}; valid: "
                                 f"{', '.join(m.value for m in lane.modes)}")
            chosen.setdefault(target, [])
            if mode not in chosen[target]:
                chosen[target].append(mode)
    unrequested = [t for t in chosen if t not in targets]
    if unrequested:
        raise UsageError(f"--quantize names target(s) {', '.join(unrequested)} not given with --target")
    ordered = sorted(dict.fromkeys(targets), key=lambda t: t != "onnx")
    return [Route(t, m) for t in ordered for m in chosen.get(t, LANES[t].default)]


_METRICS = {"rel_l2": "rel_l2_max", "rel_l2_max": "rel_l2_max", "snr_db": "snr_db_min",
            "snr_db_min": "snr_db_min", "snr": "snr_db_min", "cosine": "cosine_min", "cosine_min": "cosine_min"}


@dataclass(frozen=True)
class ThresholdOverride:
    """`--threshold [MODE@][OUTPUT:]METRIC=VALUE`."""

    mode: Mode | None
    output: str | None
    field: str
    value: float


def parse_threshold(text: str) -> ThresholdOverride:
    m = re.fullmatch(r"(?:([a-z0-9-]+)@)?(?:(.+):)?([a-z_0-9]+)=(\S+)", text.strip())
    if not m or m.group(3) not in _METRICS:
        raise UsageError(f"--threshold {text!r}: expected [MODE@][OUTPUT:]METRIC=VALUE with METRIC one of "
                         "rel_l2, snr_db, cosine (e.g. int8@logits:snr_db=12)")
    mode = parse_mode(m.group(1)) if m.group(1) else None
    field = _METRICS[m.group(3)]
    try:
        value = float(m.group(4))
    except ValueError:
        value = math.nan
    low, high, what = _RANGES[field]
    if not (math.isfinite(value) and low <= value <= high):
        raise UsageError(f"--threshold {text!r}: {m.group(3)} must be {what}")
    return ThresholdOverride(mode, m.group(2), field, value)


# Finite, so the report (strict JSON) can hold every threshold; a bound that judges nothing is
# still expressible (rel_l2=1e30, snr_db=-300).
_RANGES = {"rel_l2_max": (0.0, 1e30, "a finite number >= 0"),
           "snr_db_min": (-1000.0, 1000.0, "a finite number of dB from -1000 to 1000"),
           "cosine_min": (-1.0, 1.0, "a number from -1 to 1")}


def thresholds_for(mode: Mode, outputs: list[str], overrides: list[ThresholdOverride]) -> dict[str, Thresholds]:
    known = set(outputs)
    for o in overrides:
        if o.output is not None and o.output not in known:
            raise UsageError(f"--threshold names output {o.output!r}; the model's outputs are {', '.join(outputs)}")
    result = {}
    for name in outputs:
        t = DEFAULT_THRESHOLDS[mode]
        for o in overrides:
            if (o.mode is None or o.mode == mode) and (o.output is None or o.output == name):
                t = t.replace(**{o.field: o.value})
        result[name] = t
    return result


def check_coreml_target(routes: list[Route], target: str | None) -> None:
    """An explicit `--coreml-target` too old for a requested mode is bad usage; without one, each
    artifact's target is raised to what its mode needs (and the report says so)."""
    if target is None:
        return
    from bridge.converters.coreml.compress import MODES, TARGETS, target_index

    if target not in TARGETS:
        raise UsageError(f"--coreml-target {target}: valid targets are {', '.join(TARGETS)}")
    for r in routes:
        if r.target == "coreml" and target_index(MODES[r.mode].min_target) > target_index(target):
            raise UsageError(f"coreml mode {r.mode} needs --coreml-target {MODES[r.mode].min_target} or newer, "
                             f"not {target}")
