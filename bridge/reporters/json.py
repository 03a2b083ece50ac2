"""report.json: the versioned JSON document (`Report.to_json`), written atomically."""

from __future__ import annotations

import json
from pathlib import Path

from bridge.base.files import write_atomic
from bridge.report import Report


class JsonReporter:
    def write(self, report: Report, path: Path) -> None:
        write_atomic(path, (json.dumps(report.to_json(), indent=2, allow_nan=False) + "\n").encode())
        report.path = path
