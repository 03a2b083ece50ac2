"""The ONNX hub: every source is exported here once, then lowered to each target lane. The hub is
also a lane of its own (`--target onnx`): its artifact is the hub file itself.

This module is that lane's declaration (registered in pyproject.toml's `bridge.lanes` entry points):
data and paths only, no framework import.
"""

from __future__ import annotations

from pathlib import Path

from bridge.base.lane import Lane
from bridge.base.modes import FP32_PARITY, Mode, ModeSpec


def is_onnx(path: Path) -> bool:
    """An ONNX file: a ModelProto starts with its ir_version field (0x08). Sniffing it checks every
    tensor's external data and the subgraph nesting, and refuses the file if they are unsafe."""
    from bridge.base.sources import Format, sniff

    try:
        with path.open("rb") as f:
            if not path.is_file() or f.read(1) != b"\x08":
                return False
    except OSError:
        return False
    return sniff(str(path)).format is Format.ONNX


LANE = Lane(
    name="onnx",
    suffix=".onnx",
    modes=(ModeSpec(Mode.FP32, FP32_PARITY, description="float32"),),
    default=("fp32",),
    convert="bridge.converters.onnx.artifact:ship",
    runner="bridge.validators.runners.onnxruntime:OnnxRuntimeRunner",
    tracer="bridge.validators.runners.onnxruntime:OnnxRuntimeTracer",
    recognize=is_onnx,
    in_process=True,
    requires=("onnx", "onnxruntime", "onnxslim"),
    extra="onnx",
)
