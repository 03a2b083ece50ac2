"""Small stage functions the cache and executor tests run in real stage children."""

from __future__ import annotations

import importlib
import json
import sys
import time
from pathlib import Path


def read_files(paths: list[str], write: str, module_dir: str | None = None) -> str:
    """Reads `paths`, writes `write` (and reads it back), imports `helper_module` from `module_dir`."""
    for p in paths:
        Path(p).read_bytes()
    Path(write).write_text("made here")
    Path(write).read_text()
    if module_dir:
        sys.path.insert(0, module_dir)
        importlib.import_module("helper_module")
    return "done"


def stamp(path: str, seconds: float) -> str:
    """Records when it ran (the executor tests check how many ran at once)."""
    start = time.time()
    time.sleep(seconds)
    with open(path, "a") as f:
        f.write(json.dumps([start, time.time()]) + "\n")
    return path


def make_files(root: str) -> dict:
    """A result naming files and a folder under `root`, as a stage's result does."""
    base = Path(root)
    (base / "data").mkdir(parents=True, exist_ok=True)
    (base / "model.onnx").write_bytes(b"graph")
    (base / "model.onnx.data").write_bytes(b"tensors")
    (base / "data" / "000000_0000.npy").write_bytes(b"sample")
    (base / "unlisted.tmp").write_bytes(b"scratch")
    return {"model": str(base / "model.onnx"), "samples": str(base / "data"), "name": "model"}


def environment() -> dict:
    """What a stage child starts with: the modules it has loaded and its thread allotment."""
    import os
    import sys

    return {"modules": sorted(sys.modules), "omp": os.environ.get("OMP_NUM_THREADS")}


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def pid() -> int:
    import os

    return os.getpid()


def leave_temporary() -> dict:
    """Makes a temporary folder and file and leaves them, as a library whose cleanup runs at exit
    does (a stage child leaves by os._exit: exit hooks never run)."""
    import tempfile

    folder = tempfile.mkdtemp()
    (Path(folder) / "weights.bin").write_bytes(b"\0" * 1024)
    return {"folder": folder, "tmpdir": tempfile.gettempdir()}
