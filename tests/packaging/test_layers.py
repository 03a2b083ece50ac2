"""The layering contracts (pyproject.toml's [tool.importlinter]) hold, and import-linter really sees
the lanes: they install as bridge.converters from the converters/ folder, which a scan of bridge/
alone would miss, so the contracts are checked on an installed copy of the wheel, and a violation
planted in that copy must break them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    pytest.importorskip("importlinter")
    root = tmp_path_factory.mktemp("layers")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    root / "dist", ROOT], check=True, capture_output=True)
    wheel = next((root / "dist").glob("*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", root / "site", wheel],
                   check=True, capture_output=True)
    return root / "site"


def lint(site: Path) -> subprocess.CompletedProcess:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    return subprocess.run([str(lint_imports), str(ROOT / "pyproject.toml"), "--no-cache"], capture_output=True,
                          text=True, cwd=site.parent, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})


def test_contracts_hold_on_the_installed_package(installed):
    r = lint(installed)
    assert r.returncode == 0, r.stdout[-3000:]
    assert "3 kept, 0 broken" in r.stdout
    analyzed = int(r.stdout.split("Analyzed ")[1].split(" files")[0])
    assert analyzed >= 90, "the lanes and runners are part of what is checked"


@pytest.mark.parametrize("module, line, contract", [
    ("bridge/converters/tflite/lane.py", "import bridge.converters.coreml.lane", "Lanes never import each other"),
    ("bridge/validators/runners/tflite.py", "import bridge.converters.tflite.lane", "CLI > orchestration"),
    ("bridge/converters/coreml/lane.py", "import bridge.conversion", "CLI > orchestration"),
    ("bridge/base/errors.py", "import bridge.lanes", "CLI > orchestration"),
    ("bridge/converters/onnx/hub.py", "import bridge.converters.tflite.rewrites", "The ONNX hub is upstream"),
])
def test_a_planted_violation_breaks_a_contract(installed, tmp_path, module, line, contract):
    site = tmp_path / "site"
    shutil.copytree(installed, site)
    path = site / module
    path.write_text(path.read_text() + f"\n{line}  # planted\n")
    r = lint(site)
    assert r.returncode != 0, r.stdout[-3000:]
    verdicts = [ln.strip() for ln in r.stdout.splitlines() if ln.strip().endswith(("KEPT", "BROKEN"))]
    assert any(v.startswith(contract) and v.endswith("BROKEN") for v in verdicts), verdicts
