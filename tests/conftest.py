"""Shared test helpers: run the real CLI, read the report, write small model files in code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"


BRIDGE = Path(sys.executable).parent / "bridge"  # the installed console script


def bridge(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 900):
    """Run the installed `bridge` console script as a user would; returns the CompletedProcess."""
    return subprocess.run([str(BRIDGE), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {})}, timeout=timeout)


def with_nonfinite(x: np.ndarray, nan: int = 0, inf: int = 0) -> np.ndarray:
    """`x` with its first `nan` values NaN and the next `inf` values +-Inf."""
    out = x.copy().ravel()
    out[:nan] = np.nan
    out[nan:nan + inf] = [np.inf if i % 2 else -np.inf for i in range(inf)]
    return out.reshape(x.shape)


def held_out_images(folder: Path, count: int = 8) -> Path:
    """The last `count` calibration images (the ones `bridge convert --calibration` holds out for
    parity and never calibrates on), copied to `folder`: parity data for `validate`."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    for image in sorted((SAMPLES / "calibration").glob("*.png"))[-count:]:
        shutil.copy(image, folder / image.name)
    return folder


def report_folder(out: Path) -> Path:
    """Where the last run into `out` left its report: `out` itself when every artifact passed,
    `out/.bridge-failed` when the run failed (the previous output stays as it was)."""
    found = [p for p in (out / "report.json", out / ".bridge-failed" / "report.json") if p.exists()]
    assert found, f"no report in {out}"
    return max(found, key=lambda p: p.stat().st_mtime_ns).parent


def report(out: Path) -> dict:
    """The last run's report (artifact paths are relative to `report_folder(out)`)."""
    return json.loads((report_folder(out) / "report.json").read_text())


def artifact(rep: dict, target: str, mode: str) -> dict:
    found = [a for a in rep["artifacts"] if a["target"] == target and a["quantization"] == mode]
    made = [(a["target"], a["quantization"]) for a in rep["artifacts"]]
    assert len(found) == 1, f"no single {target}/{mode} in {made}"
    return found[0]


def write_module(path: Path, source: str) -> Path:
    path.write_text(textwrap.dedent(source))
    return path


@pytest.fixture
def two_outputs(tmp_path: Path) -> Path:
    """Two outputs of the same shape whose names sort opposite to their order."""
    return write_module(tmp_path / "two_outputs.py", """
        import torch
        from torch import nn

        class TwoHeads(nn.Module):
            def __init__(self):
                super().__init__()
                self.body = nn.Conv2d(3, 8, 3, padding=1)
                self.zeta = nn.Conv2d(8, 4, 1)
                self.alpha = nn.Conv2d(8, 4, 1)

            def forward(self, image):
                h = torch.relu(self.body(image))
                return {"zeta": self.zeta(h), "alpha": self.alpha(h) * 3.0 + 1.0}

        def make():
            torch.manual_seed(0)
            return TwoHeads().eval(), torch.randn(1, 3, 16, 16)
        """)
