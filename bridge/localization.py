"""Per-layer localisation, orchestrated: which artifacts get it, with what, and how it is reported.

`convert` and `validate` localise every artifact that fails parity (unless told not to); `bridge
debug` localises its artifact whether it passes or not. The work runs in a child stage with the
artifact lane's runtime blocks (`bridge.validators.localisation.stage`); the hub's traced tensors
are written once per run and shared by every artifact localised in it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from bridge.base.arrays import Feed
from bridge.base.bindings import IO
from bridge.base.errors import BridgeError, one_line
from bridge.base.lane import Lane
from bridge.base.modes import ModeSpec, Thresholds
from bridge.progress import Progress
from bridge.report import Parity
from bridge.stages import Limits, Stage, run_stage

STAGE_FUNCTION = "bridge.validators.localisation.stage:localize"
DEBUG_CARRY_SECONDS = 120.0  # `bridge debug` is asked for: it carries more layers to the outputs


class When(StrEnum):
    on_failure = "on-failure"
    always = "always"
    never = "never"


def layer_thresholds(spec: ModeSpec, overrides: Sequence) -> Thresholds:
    """The mode's thresholds, with the `--threshold` overrides that name no output (an override for
    one output says nothing about the layers inside)."""
    t = spec.thresholds
    for o in overrides:
        if o.output is None and (o.mode is None or o.mode == spec.name):
            t = t.replace(**{o.field: o.value})
    return t


# How a localisation stage is run: (progress label, stage, request) -> its result. `convert` runs it
# through its executor (and lists it in `stage_runs`); by default it runs in a child here.
Call = Callable[[str, Stage, object], dict]


@dataclass
class Localizer:
    """One run's localisation: the hub and samples every artifact is compared on.

    Never cached: the isolated profile carries layers to the outputs for a bounded time, so the
    same inputs need not give the same report, and a cache must only give back what would come again.
    """

    hub_path: str
    feeds: Sequence[Feed]
    node_names: Mapping[str, str]
    framework: str
    work: Path
    limits: Limits
    progress: Progress
    overrides: Sequence = ()
    when: When = When.on_failure
    call: Call | None = None
    carry_seconds: float | None = None  # how long the isolated profile carries layers (None: by `when`)
    max_carried: int | None = None  # and how many at most (None: the stage's default)
    count: int = field(default=0, init=False)

    def wanted(self, parity: Parity | None) -> bool:
        if parity is None or self.when == When.never:
            return False
        if self.when == When.always:
            return True
        # Where the source itself yields NaN/Inf no artifact can pass, and the hub holds them too:
        # no layer of the artifact is to blame, so nothing is localised (the reason says so).
        source_nonfinite = any(any((o.get("reference_nonfinite") or {}).values())
                               for o in parity.outputs.values() if isinstance(o, dict))
        return parity.status == "failed" and not source_nonfinite

    def attach(self, parity: Parity, lane: Lane, spec: ModeSpec, artifact: str, io: IO | None,
               correspondence: Mapping[str, str] | None = None, label: str = "") -> None:
        """Localise `artifact` and record it in its parity (`parity.localization`, and the reason)."""
        parity.localization = self.run(lane, spec, artifact, io, correspondence, label or Path(artifact).name)
        line = summary(parity.localization)
        if line and parity.status == "failed":
            parity.reason += f"; {line}"

    def run(self, lane: Lane, spec: ModeSpec, artifact: str, io: IO | None,
            correspondence: Mapping[str, str] | None, label: str) -> dict:
        if lane.tracer is None:
            return {"status": "not_available", "reason": f"the {lane.name} lane declares no tracer"}
        from bridge.validators.localisation.stage import CARRY_SECONDS, LocalizeRequest

        self.count += 1
        req = LocalizeRequest(
            artifact=artifact, tracer=lane.tracer, hub=self.hub_path, hub_trace=str(self.work / "hub"),
            work=str(self.work / f"artifact-{self.count}"), feeds=self.feeds, io=io,
            thresholds=layer_thresholds(spec, self.overrides), node_names=dict(self.node_names),
            correspondence=dict(correspondence or {}), framework=self.framework,
            carry_seconds=self.carry_seconds or (DEBUG_CARRY_SECONDS if self.when == When.always else CARRY_SECONDS),
            **({"max_carried": self.max_carried} if self.max_carried else {}))
        start = time.perf_counter()
        stage = Stage(f"{lane.name}-localize", STAGE_FUNCTION, lane.runtime_blocks)
        text = f"Localising the divergence in {label} layer by layer"
        try:
            found = self.call(text, stage, req) if self.call else self._run_here(text, stage, req)
        except BridgeError as e:
            found = {"status": "failed", "reason": one_line(str(e))}
        found["seconds"] = round(time.perf_counter() - start, 3)
        return found


    def _run_here(self, label: str, stage: Stage, req: object) -> dict:
        with self.progress.step(label):
            return run_stage(stage, req, limits=self.limits)


def summary(loc: dict | None) -> str:
    """One line for the parity reason: the first divergent layer (and the isolated worst, when it
    names another one)."""
    if not loc:
        return ""
    if loc.get("status") == "failed":
        return f"per-layer localisation failed: {loc.get('reason', '')}"
    if loc.get("status") == "no_divergence":
        return (f"per-layer localisation found every layer within the thresholds against the hub "
                f"({loc.get('mapped', {}).get('layers', 0)} layers compared)")
    first = loc.get("first_divergent")
    if not first:
        return ""
    text = f"first divergent layer: {describe(first)}"
    worst = (loc.get("isolated") or {}).get("worst")
    if worst and worst.get("tensor") != first.get("tensor"):
        text += f"; worst on its own: {alone(worst)}"
    return text


def alone(layer: dict) -> str:
    """The isolated figures: the layer fed exact inputs, and what that alone does to the outputs."""
    iso = layer.get("isolated") or {}
    text = describe(layer, iso)
    if iso.get("output_snr_db") is not None:
        text += f", alone it leaves the outputs at {iso['output_snr_db']:.1f} dB"
    return text


def describe(layer: dict, metrics: dict | None = None) -> str:
    """`Conv /features/features.4/features.4.0/Conv (fused with Clip ...; rel_l2 1.51, 3.6 dB)`."""
    metrics = metrics if metrics is not None else layer
    others = [f"{t} {n}" for n, t in zip(layer.get("nodes", []), layer.get("op_types", []), strict=False)
              if n != layer.get("node")]
    fused = f" fused with {', '.join(others[:3])}{' ...' if len(others) > 3 else ''}" if others else ""
    numbers = []
    if metrics.get("rel_l2") is not None:
        numbers.append(f"rel_l2 {metrics['rel_l2']:.3g}")
    if metrics.get("snr_db") is not None:
        numbers.append(f"{metrics['snr_db']:.1f} dB")
    if not numbers and layer.get("reasons"):  # NaN/Inf where the hub has none, or the other way round
        numbers.append("; ".join(layer["reasons"]))
    module = f" (module {layer['module']})" if layer.get("module") else ""
    numbers_text = f" ({', '.join(numbers)})" if numbers else ""
    return f"{layer.get('op_type')} {layer.get('node')}{module}{fused}{numbers_text}"
