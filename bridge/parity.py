"""Turn runtime outputs into parity verdicts, attributing error to the stage that introduced it."""

from __future__ import annotations

from collections.abc import Sequence

from bridge.base.arrays import Column, Feed, columns
from bridge.base.errors import BridgeError, ErrorRecord, StageCrashed
from bridge.base.modes import FP32_PARITY, Thresholds
from bridge.report import ArtifactRecord, Parity
from bridge.validators.compare import Metrics, compare, failures, metrics

HUB_STAGE = "source->onnx"
TARGET_STAGE = "onnx->target"


def stage_metrics(actual: Sequence[Feed], reference: Sequence[Feed], names: list[str]) -> dict[str, dict]:
    out = {}
    for n in names:
        try:
            out[n] = metrics(Column(actual, n), Column(reference, n)).to_json()
        except (KeyError, ValueError) as e:
            out[n] = {"error": str(e)}
    return out


# An artifact whose error is within this multiple of the source's own noise floor cannot be told
# apart from the source's sensitivity to its inputs' last bit.
ILL_CONDITIONED = 10.0


def noise_floor(source: Sequence[Feed], nudged: Sequence[Feed] | None, names: list[str]) -> dict[str, Metrics]:
    """How far the source's outputs move when its float inputs move by one rounding step (the
    export stage ran it on the first samples, nudged): per output."""
    if not nudged:
        return {}
    first = source[:len(nudged)] if isinstance(source, Sequence) else source
    out = {}
    for n in names:
        try:
            out[n] = metrics(Column(nudged, n), Column(first, n))
        except (KeyError, ValueError):
            continue
    return out


def floor_json(floor: dict[str, Metrics]) -> dict[str, dict]:
    return {n: {"rel_l2": m.to_json()["rel_l2"], "snr_db": m.to_json()["snr_db"]} for n, m in floor.items()}


def judge(*, actual: Sequence[Feed], source: Sequence[Feed], onnx: Sequence[Feed] | None, names: list[str],
          thresholds: dict[str, Thresholds], runtime: str, inputs: str | None, calibration: str | None,
          sizes: dict[str, list[int]], floor: dict[str, Metrics] | None = None) -> Parity:
    """Compare `actual` with the source; with `onnx` (the hub's outputs) also the onnx->target
    stage (the source->onnx stage is the same for every artifact: the report holds it once, as
    `hub`). `inputs` and `calibration` say where the samples came from. With the source's noise
    floor, say when a failure is within reach of the source's own sensitivity."""
    result = compare(columns(actual, names), columns(source, names), thresholds)
    floor = floor or {}
    stages = {}
    if onnx is not None:
        stages[TARGET_STAGE] = stage_metrics(actual, onnx, names)
    reason, culprit = "", None
    if not result.passed:
        reason = result.reason()
        if any(m.reference_nonfinite for m in result.outputs.values()):
            # No stage introduced it: the reference is undefined there, so no artifact can pass.
            reason += " (the source itself yields NaN/Inf on the parity samples: fix the model or its inputs)"
        elif onnx is not None:
            culprit = _culprit(onnx, source, names)
            reason += f" (error introduced at {culprit})"
        reason += _ill_conditioned(result.outputs, result.reasons, floor)
    return Parity(
        status="passed" if result.passed else "failed",
        reason=reason,
        runtime=runtime,
        samples=len(actual),
        inputs=inputs,
        calibration=calibration,
        thresholds={n: t.to_json() for n, t in thresholds.items()},
        outputs={n: _with_floor(m.to_json(histogram=True), floor.get(n)) for n, m in result.outputs.items()},
        stages=stages,
        introduced_at=culprit,
        sizes=sizes,
    )


def _with_floor(out: dict, floor: Metrics | None) -> dict:
    if floor is not None:
        out["source_noise_floor"] = floor_json({"": floor})[""]
    return out


def _ill_conditioned(outputs: dict[str, Metrics], reasons: dict[str, list[str]], floor: dict[str, Metrics]) -> str:
    """The failing outputs whose error is within ILL_CONDITIONED x the source's noise floor."""
    near = []
    for n, why in reasons.items():
        m, f = outputs.get(n), floor.get(n)
        if why and m is not None and f is not None and f.rel_l2 > 0 and m.rel_l2 <= ILL_CONDITIONED * f.rel_l2:
            near.append(f"{n} (rel_l2 {f.rel_l2:.3g})")
    if not near:
        return ""
    return (f"; the source itself moves by {', '.join(near)} when its inputs move by one float rounding step: "
            "it is ill-conditioned on these inputs, so this error may be the source's, not the conversion's "
            "(give --parity-data with real inputs)")


def _culprit(onnx: Sequence[Feed], source: Sequence[Feed], names: list[str]) -> str:
    """The hub is float32: if it already misses fp32 parity, the export introduced the error."""
    fp32 = FP32_PARITY
    for n in names:
        try:
            if failures(metrics(Column(onnx, n), Column(source, n)), fp32):
                return HUB_STAGE
        except ValueError:
            return HUB_STAGE
    return TARGET_STAGE


def not_executed(reason: str, runtime: str | None = None) -> Parity:
    return Parity(status="not_executed", reason=reason, runtime=runtime)


def runtime_failed(rec: ArtifactRecord, e: BridgeError) -> ArtifactRecord:
    """An artifact that crashes or hangs its runtime failed like a conversion (exit 3); one the
    runtime cannot run (an op it lacks) was not executed (exit 1)."""
    if isinstance(e, StageCrashed):
        rec.error = ErrorRecord.of(e, e.stage)
    rec.parity = not_executed(str(e))
    return rec
