"""The report of a run, as typed records. Writers (`bridge.reporters`) turn it into files; this
module only says what each record means in JSON (`to_json`), once."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.base.errors import ErrorRecord

SCHEMA = "bridge.report/1"


@dataclass
class Parity:
    """A parity verdict. `bool(parity)` is whether it passed; not executed is never a pass."""

    status: str  # passed | failed | not_executed
    reason: str = ""
    runtime: str | None = None
    samples: int = 0
    calibration: str | None = None
    thresholds: dict[str, dict] = field(default_factory=dict)
    outputs: dict[str, dict] = field(default_factory=dict)
    stages: dict[str, dict[str, dict]] = field(default_factory=dict)
    sizes: dict[str, list[int]] = field(default_factory=dict)  # dynamic axes: sizes validated

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def __bool__(self) -> bool:
        return self.passed

    def to_json(self) -> dict:
        out = {"status": self.status, "passed": self.passed, "reason": self.reason, "runtime": self.runtime,
               "samples": self.samples, "calibration": self.calibration, "thresholds": self.thresholds,
               "outputs": self.outputs, "stages": self.stages}
        if self.sizes:
            out["sizes"] = self.sizes
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
    source: dict[str, Any]
    environment: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    artifacts: list[ArtifactRecord] = field(default_factory=list)
    path: Path | None = None  # where report.json was written

    @property
    def passed(self) -> bool:
        return bool(self.artifacts) and all(a.exit_code == 0 for a in self.artifacts)

    @property
    def exit_code(self) -> int:
        """Worst over all artifacts: 3 a conversion failed, else 1 a parity check failed or did not run."""
        return max((a.exit_code for a in self.artifacts), default=1)

    def to_json(self) -> dict:
        return {"schema": SCHEMA, "passed": self.passed, "exit_code": self.exit_code, "source": self.source,
                "environment": self.environment, "warnings": self.warnings,
                "artifacts": [a.to_json() for a in self.artifacts]}

