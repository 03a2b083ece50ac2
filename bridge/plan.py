"""Route planning: which artifacts a run produces and what each must achieve.

Everything here is checked before any conversion runs, so bad usage is exit 2 in milliseconds.
What a mode must achieve, and whether a lane accepts a combination of options, comes from the
lanes' declarations (`bridge.base.lane.Lane`), never from a table here.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from bridge.base.errors import UsageError
from bridge.base.lane import Lane, LaneCheck
from bridge.base.modes import ModeSpec, Thresholds
from bridge.base.sources import SourceRef
from bridge.lanes import all_modes, lanes


@dataclass(frozen=True)
class Route:
    """One artifact to produce: the hub lowered to `target` in `mode`."""

    target: str
    mode: str

    def __str__(self) -> str:
        return f"{self.target}/{self.mode}"

    @property
    def spec(self) -> ModeSpec:
        return lanes()[self.target].mode(self.mode)


def plan_routes(targets: list[str], quantize: list[str]) -> list[Route]:
    """Targets in the order given (onnx first: it is the hub); `--quantize TARGET=MODE[,MODE]`
    replaces that target's default modes."""
    found = lanes()
    for t in targets:
        if t not in found:
            raise UsageError(f"unknown target {t!r}; valid targets: {', '.join(found)}")
    chosen: dict[str, list[str]] = {}
    for q in quantize:
        target, sep, modes = q.partition("=")
        target = target.strip()
        if not sep or not modes.strip():
            raise UsageError(f"--quantize {q!r}: expected TARGET=MODE[,MODE...], e.g. tflite=fp32,int8")
        if target not in found:
            raise UsageError(f"--quantize {q!r}: unknown target {target!r}; valid targets: {', '.join(found)}")
        lane = found[target]
        for text in modes.split(","):
            mode = parse_mode(text)
            if mode not in lane.mode_names:
                raise UsageError(f"--quantize {q!r}: {target} has no mode {mode}; valid: "
                                 f"{', '.join(lane.mode_names)}")
            chosen.setdefault(target, [])
            if mode not in chosen[target]:
                chosen[target].append(mode)
    unrequested = [t for t in chosen if t not in targets]
    if unrequested:
        raise UsageError(f"--quantize names target(s) {', '.join(unrequested)} not given with --target")
    ordered = sorted(dict.fromkeys(targets), key=lambda t: t != "onnx")
    return [Route(t, m) for t in ordered for m in chosen.get(t, found[t].default)]


def parse_mode(text: str) -> str:
    mode = text.strip().lower()
    if mode not in all_modes():
        raise UsageError(f"unknown quantization mode {text!r}; valid modes: {', '.join(all_modes())}")
    return mode


def lane_options(routes: list[Route], given: Mapping[str, object], source: SourceRef) -> dict[str, object]:
    """Each targeted lane's options (defaults where not given), checked by the lane itself; an
    option of a lane that is not targeted is bad usage (it would silently do nothing)."""
    found = lanes()
    for name, value in given.items():
        if name not in found:
            raise UsageError(f"options for {name!r}, which is not an installed lane ({', '.join(found)})")
        if name not in {r.target for r in routes} and _non_default(found[name], value):
            flags = ", ".join(_non_default(found[name], value))
            raise UsageError(f"{flags} needs --target {name}")
    out = {}
    for target in dict.fromkeys(r.target for r in routes):
        lane = found[target]
        options = lane.make_options(given.get(target))
        if lane.check:
            lane.check(LaneCheck(tuple(r.mode for r in routes if r.target == target), options, source))
        out[target] = options
    return out


def _non_default(lane: Lane, value: object) -> list[str]:
    """The flags of the fields set to something other than their default."""
    options = lane.make_options(value)
    if options is None:
        return []
    default = lane.options()
    out = []
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        if value != getattr(default, f.name):
            out.append(flag(lane, f) if isinstance(value, bool) else f"{flag(lane, f)} {value}")
    return out


def flag(lane: Lane, f: dataclasses.Field) -> str:
    """An option field's command-line flag: `--<lane>-<field>` unless the field names its own."""
    return f.metadata.get("flag") or f"--{lane.name}-{f.name.replace('_', '-')}"


_METRICS = {"rel_l2": "rel_l2_max", "rel_l2_max": "rel_l2_max", "snr_db": "snr_db_min",
            "snr_db_min": "snr_db_min", "snr": "snr_db_min", "cosine": "cosine_min", "cosine_min": "cosine_min"}


@dataclass(frozen=True)
class ThresholdOverride:
    """`--threshold [MODE@][OUTPUT:]METRIC=VALUE`."""

    mode: str | None
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


def thresholds_for(spec: ModeSpec, outputs: list[str], overrides: list[ThresholdOverride]) -> dict[str, Thresholds]:
    known = set(outputs)
    for o in overrides:
        if o.output is not None and o.output not in known:
            raise UsageError(f"--threshold names output {o.output!r}; the model's outputs are {', '.join(outputs)}")
    result = {}
    for name in outputs:
        t = spec.thresholds
        for o in overrides:
            if (o.mode is None or o.mode == spec.name) and (o.output is None or o.output == name):
                t = t.replace(**{o.field: o.value})
        result[name] = t
    return result
