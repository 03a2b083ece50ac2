"""The ONNX lane's conversion: the hub file itself (and its external data, over 2 GB) is the artifact."""

from __future__ import annotations

import shutil
from pathlib import Path

from bridge.base.lane import LaneArtifact, LaneRequest
from bridge.converters.onnx.hub import data_file


def ship(req: LaneRequest) -> list[LaneArtifact]:
    hub = Path(req.hub_path)
    copy = Path(req.workdir) / "artifact" / hub.name
    copy.parent.mkdir(exist_ok=True)
    for f in (data_file(hub), hub):  # the tensors beside the graph first
        if f.exists():
            shutil.copyfile(f, copy.parent / f.name)
    return [LaneArtifact(mode=mode, path=str(copy), route=req.hub_route) for mode in req.modes]
