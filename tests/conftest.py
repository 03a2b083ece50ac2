"""Shared test helpers: run the real CLI, read the report, write small model files in code; and
one session-wide check that every report the suite made bridge write matches the published schema."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import subprocess
import sys
import textwrap
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

# PyPI's torch for Python 3.12 is the CUDA build, which ships triton; torch imports it lazily (torch.export,
# dynamo exports). A process that imported TensorFlow (or coremltools, which imports it) before triton
# segfaults when triton loads. bridge's stages never load both, but this process imports everything the
# tests touch: triton goes first.
with contextlib.suppress(ImportError):
    import triton  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"


BRIDGE = Path(sys.executable).parent / "bridge"  # the installed console script


_CACHE: list[str] = []


def pytest_configure(config):
    """The CLI's stage cache lives in the user's cache folder (XDG_CACHE_HOME): the suite gets a
    folder of its own, so it never reads or fills the developer's, and starts empty every run."""
    import tempfile

    _CACHE.append(tempfile.mkdtemp(prefix="bridge-test-cache-"))
    os.environ["XDG_CACHE_HOME"] = _CACHE[-1]


def pytest_unconfigure(config):
    """The suite's cache folder goes with it (a full run leaves 1.5 GB there: runs kept filling /tmp)."""
    import shutil

    while _CACHE:
        shutil.rmtree(_CACHE.pop(), ignore_errors=True)


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


# --- Every report.json bridge writes in the suite validates against the published schema --------------

REPORT_SCHEMA = json.loads((resources.files("bridge") / "schemas" / "report-v2.json").read_text())
_FORGED: dict[Path, str] = {}  # reports a test wrote by hand -> sha256 of what it wrote


def forge_report(path: Path, doc: object) -> Path:
    """Write a report by hand: an edited, forged or partial one that a test feeds to bridge. The
    schema check leaves it alone unless bridge has since written over it."""
    data = json.dumps(doc).encode()
    path.write_bytes(data)
    _FORGED[path.resolve()] = hashlib.sha256(data).hexdigest()
    return path


def schema_problems(doc: dict) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(REPORT_SCHEMA, format_checker=jsonschema.FormatChecker())
    return [f"{e.json_path}: {e.message[:300]}" for e in validator.iter_errors(doc)]


def written_reports(root: Path):
    """(path, document) of every bridge report under `root`, whatever its file name (`validate
    --report` takes any): regular JSON files whose `schema` says bridge.report/*."""
    # pytest loads this file as `conftest`, tests import it as `tests.conftest`: the forged list is
    # the latter's, where `forge_report` recorded it.
    from tests.conftest import _FORGED

    for path in root.rglob("*.json"):
        try:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode) or st.st_size > 64 << 20:  # no FIFO, symlink or huge file
                continue
            data = path.read_bytes()
            doc = json.loads(data)
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and str(doc.get("schema", "")).startswith("bridge.report/"):
            if _FORGED.get(path.resolve()) != hashlib.sha256(data).hexdigest():
                yield path, doc


@pytest.fixture(scope="session", autouse=True)
def every_report_matches_the_schema(tmp_path_factory):
    """At the end of the session, every report bridge wrote under the suite's temporary folders
    (subprocess runs of the console script included) must be a version 2 report that validates."""
    yield
    problems, checked = [], 0
    for path, doc in written_reports(tmp_path_factory.getbasetemp()):
        checked += 1
        if doc["schema"] != "bridge.report/2":
            problems.append(f"{path}: written as {doc['schema']}")
        problems += [f"{path}: {p}" for p in schema_problems(doc)[:5]]
    assert not problems, f"{len(problems)} schema problem(s) in {checked} report(s):\n" + "\n".join(problems[:40])
