"""The batch's summary files, beside the model folders in `--out`.

- `summary.json` (schema `bridge.batch/1`): every model's exit code, its report's path, its
  artifacts' paths and sha256, and how many of its stages ran or came from the cache.
- `summary.html`: the models in a table, then each model's artifacts as its own report.html words
  them, linking to that page (`bridge.reporters.html.render_batch`).
- `junit.xml`: one `<testsuite>` per model, each the suite its own `--junit` would hold
  (`bridge.reporters.junit.render_batch`).

Each model's own `report.json` and `report.html` stay the full record. All three are rendered
before any is written, and each may replace only a file an earlier batch wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

from bridge.base.errors import UsageError
from bridge.base.files import write_atomic
from bridge.reporters import html, junit

SCHEMA_PREFIX = "bridge.batch/"


def render_json(doc: dict) -> bytes:
    return (json.dumps(doc, indent=2, allow_nan=False) + "\n").encode()


# file name -> (renderer of the summary document, the models' report documents and the cache's
# compiled templates; is it ours?)
WRITERS = {"summary.json": (lambda doc, docs, pages: render_json(doc), lambda path: _is_summary(path)),
           "summary.html": (html.render_batch, html.is_batch_page),
           "junit.xml": (lambda doc, docs, pages: junit.render_batch(doc, docs), junit.is_junit)}


def write_summary(summary, out: Path, pages=None) -> None:
    """`pages` (the stage cache's, when it is on): the HTML template compiled by an earlier run."""
    doc = summary.to_json()
    docs = {m.name: m.report.to_json() if m.report is not None else None for m in summary.models}
    rendered = {name: render(doc, docs, pages) for name, (render, _) in WRITERS.items()}
    for name, data in rendered.items():
        write_atomic(out / name, data)
    summary.path = out / "summary.json"


def check_destinations(out: Path) -> None:
    """A summary file may replace only an earlier batch's, never a user's file."""
    for name, (_, ours) in WRITERS.items():
        path = out / name
        if not path.exists() and not path.is_symlink():
            continue
        if path.is_symlink() or not path.is_file() or not ours(path):
            raise UsageError(f"{path} exists and is not one an earlier bridge batch wrote; move it away or choose "
                             "another --out")


def _is_summary(path: Path) -> bool:
    try:
        return str(json.loads(path.read_text())["schema"]).startswith(SCHEMA_PREFIX)
    except (OSError, ValueError, KeyError, TypeError):
        return False
