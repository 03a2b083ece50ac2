"""Report writers: each takes the typed `Report` and writes one file. JSON today; the seam where
HTML and JUnit writers plug in."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from bridge.report import Report


class Reporter(Protocol):
    def write(self, report: Report, path: Path) -> None: ...
