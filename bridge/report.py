"""The report of a run, as typed records. Writers (`bridge.reporters`) turn it into files; this
module only says what each record means in JSON (`to_json`), once. The JSON document is the
contract: `bridge/schemas/report-v2.json` describes it, and the HTML and JUnit writers read only it,
so they render a stored report exactly as they render a fresh one."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bridge.base.errors import ErrorRecord
from bridge.base.installed import version

SCHEMA = "bridge.report/2"
SCHEMA_V1 = "bridge.report/1"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _version() -> str | None:
    return version("bridge-convert")


@dataclass
class Parity:
    """A parity verdict. `bool(parity)` is whether it passed; not executed is never a pass."""

    status: str  # passed | failed | not_executed
    reason: str = ""
    runtime: str | None = None
    samples: int = 0
    inputs: str | None = None  # origin of the parity inputs: synthetic | calibration | user (`Report.samples`)
    calibration: str | None = None  # origin of the calibration data for calibrated modes: synthetic | user
    thresholds: dict[str, dict] = field(default_factory=dict)
    outputs: dict[str, dict] = field(default_factory=dict)
    stages: dict[str, dict[str, dict]] = field(default_factory=dict)  # "onnx->target" (the hub's own is `Report.hub`)
    introduced_at: str | None = None  # for a failure: the stage whose error broke the threshold
    sizes: dict[str, list[int]] = field(default_factory=dict)  # dynamic axes: sizes validated
    seconds: float = 0.0  # running the artifact on the samples and comparing
    localization: dict | None = None  # per-layer localisation (bridge.validators.localisation), when it ran

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def __bool__(self) -> bool:
        return self.passed

    def to_json(self) -> dict:
        out = {"status": self.status, "passed": self.passed, "reason": self.reason, "runtime": self.runtime,
               "samples": self.samples, "inputs": self.inputs, "calibration": self.calibration,
               "seconds": round(self.seconds, 3), "thresholds": self.thresholds, "outputs": self.outputs}
        if self.stages:
            out["stages"] = self.stages
        if self.introduced_at:
            out["introduced_at"] = self.introduced_at
        if self.sizes:
            out["sizes"] = self.sizes
        if self.localization is not None:
            out["localization"] = self.localization
        return out


@dataclass
class ArtifactRecord:
    target: str
    quantization: str
    path: str | None = None  # relative to the report
    bytes: int | None = None
    bytes_per_param: float | None = None
    sha256: str | None = None
    route: list[str] = field(default_factory=list)
    seconds: float = 0.0
    io: dict | None = None
    error: ErrorRecord | None = None
    parity: Parity | None = None
    warnings: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return 3
        return 0 if self.parity is not None and self.parity.passed else 1

    def to_json(self) -> dict:
        out = {"target": self.target, "quantization": self.quantization, "path": self.path,
               "bytes": self.bytes, "bytes_per_param": self.bytes_per_param, "sha256": self.sha256,
               "route": self.route, "seconds": round(self.seconds, 3), "io": self.io,
               "error": self.error.to_json() if self.error else None,
               "parity": self.parity.to_json() if self.parity is not None else None}
        if self.warnings:
            out["warnings"] = self.warnings
        out.update(self.details)
        return out


@dataclass
class Report:
    command: str  # convert | validate
    source: dict[str, Any]
    command_line: list[str] | None = None  # argv as typed, from `bridge`; None from the Python API
    created: str = field(default_factory=_now)  # UTC, when the run started
    bridge_version: str | None = field(default_factory=_version)
    hub: dict[str, Any] | None = None  # the ONNX graph the lanes read: route, opset, source->onnx metrics
    samples: dict[str, dict] = field(default_factory=dict)  # "parity", "calibration": SampleOrigin.to_json()
    environment: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    artifacts: list[ArtifactRecord] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the whole run
    path: Path | None = None  # where report.json was written
    written: dict[str, Path] = field(default_factory=dict)  # every file written: "report", "page", "junit"
    # each stage run: {"stage", "cache": ran | reused | off, "seconds"} (stages the cache gave back took 0 s)
    stage_runs: list[dict] = field(default_factory=list)
    _start: float = field(default_factory=time.perf_counter, repr=False)

    @property
    def passed(self) -> bool:
        return bool(self.artifacts) and all(a.exit_code == 0 for a in self.artifacts)

    @property
    def exit_code(self) -> int:
        """Worst over all artifacts: 3 a conversion failed, else 1 a parity check failed or did not run."""
        return max((a.exit_code for a in self.artifacts), default=1)

    def finish(self) -> None:
        """The run is over: its wall time is known (called before the files are written)."""
        self.seconds = time.perf_counter() - self._start

    def to_json(self) -> dict:
        return {"schema": SCHEMA, "command": self.command, "passed": self.passed, "exit_code": self.exit_code,
                "created": self.created, "seconds": round(self.seconds, 3), "bridge_version": self.bridge_version,
                "command_line": self.command_line, "source": self.source, "hub": self.hub, "samples": self.samples,
                "warnings": self.warnings, "artifacts": [a.to_json() for a in self.artifacts],
                "environment": self.environment, **({"stage_runs": self.stage_runs} if self.stage_runs else {})}
