"""The three source folders ship as one `bridge` namespace, and the CLI starts without frameworks."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import ROOT

HEAVY = ("torch", "tensorflow", "coremltools", "onnx", "onnxruntime", "onnx2tf", "keras", "ai_edge_litert",
         "matplotlib", "jinja2", "ray")  # the page's renderer loads when a page is written, not for --help


def test_import_and_help_load_no_framework():
    code = ("import sys, bridge, bridge.cli, bridge.converters, bridge.validators.compare;"
            "from typer.testing import CliRunner;"
            "r = CliRunner().invoke(bridge.cli.app, ['--help']); assert r.exit_code == 0, r.output;"
            "r = CliRunner().invoke(bridge.cli.app, ['convert', '--help']); assert r.exit_code == 0, r.output;"
            "r = CliRunner().invoke(bridge.cli.app, ['batch', '--help']); assert r.exit_code == 0, r.output;"
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported at startup: {out.stdout}"


def test_editable_install_maps_the_folders():
    import bridge.converters
    import bridge.validators

    assert os.path.samefile(os.path.dirname(bridge.converters.__file__), ROOT / "converters")
    assert os.path.samefile(os.path.dirname(bridge.validators.__file__), ROOT / "validators")


@pytest.mark.slow
def test_regular_install_imports(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    tmp_path / "dist", ROOT], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for module in ("bridge/cli.py", "bridge/converters/tflite/lane.py", "bridge/validators/compare.py",
                   "bridge/schemas/report-v2.json", "bridge/reporters/templates/report.html.j2"):
        assert module in names
    assert not any(n.startswith(("converters/", "validators/")) for n in names), "no top-level collisions"
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", target, wheel],
                   check=True, capture_output=True)
    code = ("import bridge, bridge.converters.tflite.lane, bridge.validators.compare as c;"
            "print(bridge.__file__, c.__file__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(target)}, cwd=tmp_path)
    assert all(p.startswith(str(target)) for p in out.stdout.split()), out.stdout
