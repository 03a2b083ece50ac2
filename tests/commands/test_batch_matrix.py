"""`bridge batch` refuses a bad matrix in one line, exit 2, before anything runs (no model folder,
no summary, no stage), through the installed console script."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import SAMPLES, bridge

ONNX_MODEL = """
[[model]]
name = "{name}"
source = "{source}"
"""


def _matrix(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "matrix.toml"
    path.write_text(text)
    return path


def _refused(tmp_path: Path, matrix: Path, needle: str, *extra: str, env: dict | None = None) -> str:
    out = tmp_path / "out"
    r = bridge("batch", matrix, "--out", out, "--cache-dir", tmp_path / "cache", *extra, env=env, timeout=120)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert needle in lines[0], lines[0]
    assert not out.exists() or not any(out.iterdir())  # nothing ran, nothing was written
    return lines[0]


KERAS = str(SAMPLES / "shapes_keras.keras")


@pytest.mark.parametrize("text, needle", [
    ("[[model]\nname = 'a'", "not valid TOML"),
    (f"[[model]]\nname = 'a'\nsource = '{KERAS}'\nquantise = ['tflite=fp16']", "unknown key 'quantise'"),
    (f"[defaults]\nname = 'a'\n[[model]]\nname = 'b'\nsource = '{KERAS}'", "name and source belong in each"),
    (f"[[model]]\nname = 'a'\nsource = '{KERAS}'\n[[model]]\nname = 'A'\nsource = '{KERAS}'", "used twice"),
    (f"[[model]]\nname = '../up'\nsource = '{KERAS}'", "plain folder name"),
    (f"[[model]]\nname = 'a/b'\nsource = '{KERAS}'", "plain folder name"),
    (f"[[model]]\nname = '.hidden'\nsource = '{KERAS}'", "plain folder name"),
    (f"[[model]]\nname = 'summary.json'\nsource = '{KERAS}'", "plain folder name"),
    (f"[[model]]\nsource = '{KERAS}'", "needs a name"),
    ("[[model]]\nname = 'a'", "needs a source"),
    ("[[model]]\nname = 'a'\nsource = 'nowhere.onnx'", "model 'a': nowhere.onnx: no such file"),
    (f"[[model]]\nname = 'a'\nsource = '{KERAS}'\nsamples = 'eight'", "expected a whole number"),
    (f"[[model]]\nname = 'a'\nsource = '{KERAS}'\ntargets = ['tflite', 'coreml']\ncoreml-route = 'sideways'",
     "expected one of"),
    (f"[[model]]\nname = 'a'\nsource = '{KERAS}'\nquantize = ['tflite=int3']", "unknown quantization mode"),
    (f"[[model]]\nname = 'a'\nsource = '{KERAS}'\ntimeout = -1", "--timeout"),
    (f"[[model]]\nname = 'a'\nsource = '{KERAS}'\nsearch-budget = 0", "--search-budget"),
    ("[models]\nname = 'a'", "unknown table 'models'"),
    ("", "no [[model]]"),
])
def test_a_bad_matrix_is_one_line_and_exit_2(tmp_path, text, needle):
    _refused(tmp_path, _matrix(tmp_path, text), needle)


def test_a_missing_matrix_file(tmp_path):
    _refused(tmp_path, tmp_path / "absent.toml", "no such matrix file")


def test_a_model_folder_holding_a_users_file_refuses_the_whole_batch(tmp_path):
    matrix = _matrix(tmp_path, f"[[model]]\nname = 'a'\nsource = '{KERAS}'\n[[model]]\nname = 'b'\n"
                               f"source = '{KERAS}'\ntargets = ['onnx']")
    mine = tmp_path / "out" / "b" / "shapes_keras.onnx"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"mine")
    r = bridge("batch", matrix, "--out", tmp_path / "out", "--cache-dir", tmp_path / "cache", timeout=120)
    assert r.returncode == 2 and "model 'b'" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert mine.read_bytes() == b"mine" and not (tmp_path / "out" / "a").exists()


def test_ray_without_ray_installed_names_the_install(tmp_path):
    fake = tmp_path / "no-ray" / "ray"  # an import of ray fails as it does when it is not installed
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'ray'\", name='ray')\n")
    matrix = _matrix(tmp_path, f"[[model]]\nname = 'a'\nsource = '{KERAS}'")
    line = _refused(tmp_path, matrix, 'pip install "bridge-convert[ray]"', "--executor", "ray",
                    env={"PYTHONPATH": str(tmp_path / "no-ray")})
    assert "ray is not installed" in line


def test_ray_address_needs_the_ray_executor(tmp_path):
    _refused(tmp_path, _matrix(tmp_path, f"[[model]]\nname = 'a'\nsource = '{KERAS}'"),
             "--ray-address needs --executor ray", "--ray-address", "auto")


def test_a_search_budget_reaches_the_models_options(tmp_path):
    """`search-budget` in [defaults] or a model's table is `--search-budget` for that model."""
    from bridge.batch import read_matrix

    keras = SAMPLES / "shapes_keras.keras"
    matrix = _matrix(tmp_path, f"[defaults]\nsearch-budget = 6\n\n[[model]]\nname = 'a'\nsource = '{keras}'\n\n"
                               f"[[model]]\nname = 'b'\nsource = '{keras}'\nsearch-budget = 12.5\n")
    a, b = read_matrix(matrix, tmp_path / "out")
    assert (a.options.search_budget, b.options.search_budget) == (6.0, 12.5)
