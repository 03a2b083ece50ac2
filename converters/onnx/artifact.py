"""The ONNX lane's conversion: the hub file itself (and its external data, over 2 GB) is the artifact."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from bridge.base.lane import LaneArtifact, LaneRequest


def data_file(path: str | Path) -> Path:
    """Where a hub model saved with external data keeps its tensors: `<name>.onnx.data` beside it.
    (Here, not in `hub`: the lane ships the hub on every run, a warm one too, and `hub` brings the
    export's graph passes with it.)"""
    path = Path(path)
    return path.with_name(path.name + ".data")


def ship(req: LaneRequest) -> list[LaneArtifact]:
    """The hub under the artifact's name: a hard link (no bytes written, and the run knows its
    sha256 already: a warm run of four trained models copied and hashed 38 MB of hubs), a copy where
    the filesystem has no links."""
    hub = Path(req.hub_path)
    copy = Path(req.workdir) / "artifact" / hub.name
    copy.parent.mkdir(exist_ok=True)
    for f in (data_file(hub), hub):  # the tensors beside the graph first
        if f.exists():
            try:
                os.link(f, copy.parent / f.name)
            except OSError:
                shutil.copyfile(f, copy.parent / f.name)
    return [LaneArtifact(mode=mode, path=str(copy), route=req.hub_route) for mode in req.modes]
