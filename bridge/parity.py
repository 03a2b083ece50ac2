"""Turn runtime outputs into parity verdicts, attributing error to the stage that introduced it."""

from __future__ import annotations

from collections.abc import Sequence

from bridge.base.arrays import Column, Feed, columns
from bridge.base.errors import BridgeError, ErrorRecord, StageCrashed
from bridge.base.modes import FP32_PARITY, Thresholds
from bridge.report import ArtifactRecord, Parity
from bridge.validators.compare import compare, failures, metrics

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


def judge(*, actual: Sequence[Feed], source: Sequence[Feed], onnx: Sequence[Feed] | None, names: list[str],
          thresholds: dict[str, Thresholds], runtime: str, calibration: str | None,
          sizes: dict[str, list[int]]) -> Parity:
    """Compare `actual` with the source; with `onnx` (the hub's outputs) also per stage."""
    result = compare(columns(actual, names), columns(source, names), thresholds)
    stages = {}
    if onnx is not None:
        stages[HUB_STAGE] = stage_metrics(onnx, source, names)
        stages[TARGET_STAGE] = stage_metrics(actual, onnx, names)
    reason = ""
    if not result.passed:
        reason = result.reason()
        if any(m.reference_nonfinite for m in result.outputs.values()):
            # No stage introduced it: the reference is undefined there, so no artifact can pass.
            reason += " (the source itself yields NaN/Inf on the parity samples: fix the model or its inputs)"
        elif onnx is not None:
            reason += f" (error introduced at {_culprit(onnx, source, names)})"
    return Parity(
        status="passed" if result.passed else "failed",
        reason=reason,
        runtime=runtime,
        samples=len(actual),
        calibration=calibration,
        thresholds={n: t.to_json() for n, t in thresholds.items()},
        outputs={n: m.to_json() for n, m in result.outputs.items()},
        stages=stages,
        sizes=sizes,
    )


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
