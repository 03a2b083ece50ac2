"""The output folder: a run's artifacts and report replace the previous run's as one set.

Until `publish`, a run changes nothing in `--out` (a run that fails or is killed earlier leaves the
previous output whole), and `report.json` always describes exactly the files beside it.
"""

from __future__ import annotations

import json
from pathlib import Path

from bridge.converters import LANES
from bridge.files import place, remove, sha256
from bridge.report import Report

STAGED = "shipped"  # in the work folder: finished artifacts wait here until `publish`


def publish(out: Path, report: Report, staged: Path) -> None:
    """Swap the previous run's output in `out` for this run's, report.json always describing
    exactly the files beside it. Until here a run changes nothing in `out` (a run that fails or is
    killed earlier leaves the previous output whole). The old report goes first, so a run killed
    from here on leaves no report rather than one describing files it replaced; then the artifacts
    move in, those only the old report listed (a target that now failed, a mode no longer asked
    for) are deleted, and the new report is written last."""
    path = out / "report.json"
    previous = _previous_artifacts(path)
    path.unlink(missing_ok=True)
    shipped = [name for a in report.artifacts if a.path for name in _files(a.to_json())]
    for name in shipped:  # an ONNX file's external data goes in before the file that points at it
        place(staged / name, out / name)
    for name in sorted(previous - set(shipped)):
        remove(out / name)
    report.write(path)


def _files(artifact: dict) -> list[str]:
    """The files one artifact ships: its external data (ONNX over 2 GB), then itself."""
    data = artifact.get("external_data")
    return [data["path"], artifact["path"]] if data else [artifact["path"]]


def _previous_artifacts(path: Path) -> set[str]:
    """The artifacts a previous `bridge convert` shipped into this folder that are still as its
    report recorded them. Nothing else is ours to delete: a `bridge validate` report (it names
    the user's own files), names with a folder in them, other suffixes, files changed since."""
    suffixes = {lane.suffix for lane in LANES.values()}

    def ours(name, digest) -> bool:
        f = path.parent / name
        return (name == f.name and not name.startswith(".") and f.suffix in suffixes | {".data"} and f.exists()
                and not f.is_symlink() and sha256(f) == digest)

    try:
        old = json.loads(path.read_text())
        if "targets" not in old["environment"]["options"]:  # only convert reports have targets
            return set()
        found = set()
        for a in old["artifacts"]:
            if isinstance(a.get("path"), str) and ours(a["path"], a.get("sha256")):
                found.add(a["path"])
                data = a.get("external_data") or {}
                if data.get("path") == f"{a['path']}.data" and ours(data["path"], data.get("sha256")):
                    found.add(data["path"])
        return found
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # no usable report: delete nothing
        return set()
