"""The batch's summary files, beside the model folders in `--out`.

`summary.json` (schema `bridge.batch/1`) is the batch's document: every model's exit code, its
report's path, its artifacts' paths and sha256, and how many of its stages ran or came from the
cache. Each model's own `report.json` stays the full record.

HOOK (issue 15): `summary.html` and `junit.xml` come from the report renderers being built in the
`reports` branch (a page and JUnit XML per single run, from the report document). When they land,
`WRITERS` gains them: the page as one section per model, JUnit as one `<testsuite>` per model
(each model's `report.json`, rendered, its suites gathered under one `<testsuites>`). The names
are reserved already (`bridge.batch.RESERVED`), so no model folder can take them.
"""

from __future__ import annotations

import json
from pathlib import Path

from bridge.base.errors import UsageError
from bridge.base.files import write_atomic

SCHEMA_PREFIX = "bridge.batch/"


def render_json(summary) -> bytes:
    return (json.dumps(summary.to_json(), indent=2, allow_nan=False) + "\n").encode()


WRITERS = {"summary.json": render_json}  # file name -> renderer of a `bridge.batch.Summary`


def write_summary(summary, out: Path) -> None:
    for name, render in WRITERS.items():
        write_atomic(out / name, render(summary))
    summary.path = out / "summary.json"


def check_destinations(out: Path) -> None:
    """A summary file may replace only an earlier batch's, never a user's file."""
    for name in WRITERS:
        path = out / name
        if not path.exists() and not path.is_symlink():
            continue
        if path.is_symlink() or not path.is_file() or not _is_summary(path):
            raise UsageError(f"{path} exists and is not an earlier bridge batch summary; move it away or choose "
                             "another --out")


def _is_summary(path: Path) -> bool:
    try:
        return str(json.loads(path.read_text())["schema"]).startswith(SCHEMA_PREFIX)
    except (OSError, ValueError, KeyError, TypeError):
        return False
