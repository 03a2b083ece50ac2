"""The three report formats of one real run, read the way their readers read them: report.html in
headless Chromium (Debian's `chromium`; `.ci/run` installs it), the JUnit file with junitparser,
report.json with the published schema. Everything runs through the installed `bridge` script.

The run converts the bundled CNN to ONNX, TFLite fp32 and int8, and Core ML fp16, with an int8
threshold of 60 dB no int8 file meets (it reaches ~35 dB): one artifact fails parity, exit 1.
"""

from __future__ import annotations

import json
import shlex
from importlib import metadata
from pathlib import Path

import pytest
from junitparser import Failure, JUnitXml

from tests.conftest import SAMPLES, bridge, forge_report, schema_problems
from tests.e2e import chromium
from tests.pages import external_references

pytestmark = pytest.mark.slow

GREEN, RED = (0x2E, 0x7D, 0x32), (0xC6, 0x28, 0x28)  # verdict colours of the overview's bars (plots.COLORS)
FIRST_LINE = (0x1F, 0x77, 0xB4)  # the first artifact's line in a histogram (plots.LINES)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("reports")
    args = ["convert", f"{SAMPLES}/shapes_cnn.py:load", "--target", "onnx", "--target", "tflite", "--target",
            "coreml", "--quantize", "tflite=fp32,int8", "--calibration", str(SAMPLES / "calibration"),
            "--threshold", "int8@snr_db=60", "--out", str(root / "out"), "--junit", str(root / "junit.xml")]
    r = bridge(*args, cwd=root)
    folder = root / "out" / ".bridge-failed"
    return {"root": root, "args": args, "result": r, "folder": folder,
            "report": json.loads((folder / "report.json").read_text())}


@pytest.fixture(scope="module")
def validated(run):
    """`bridge validate` of three of those files: on its synthetic inputs the int8 file fails
    (issue 13's noise problem, real here), the others pass."""
    root, folder = run["root"], run["folder"]
    files = [folder / n for n in ("shapes_cnn.onnx", "shapes_cnn_fp32.tflite", "shapes_cnn_int8.tflite")]
    r = bridge("validate", f"{SAMPLES}/shapes_cnn.py:load", *files, "--report", root / "v.json",
               "--html", root / "v.html", "--junit", root / "v.xml", cwd=root)
    return {"result": r, "report": json.loads((root / "v.json").read_text()), "page": root / "v.html",
            "junit": root / "v.xml"}


def test_the_run_fails_one_artifact_and_writes_every_format(run):
    r, rep, folder = run["result"], run["report"], run["folder"]
    assert r.returncode == 1, r.stderr[-3000:]
    assert [(a["target"], a["quantization"], a["parity"]["status"]) for a in rep["artifacts"]] == [
        ("onnx", "fp32", "passed"), ("tflite", "fp32", "passed"), ("tflite", "int8", "failed"),
        ("coreml", "fp16", "passed")]
    lines = r.stderr.splitlines()
    for kind, path in (("report", folder / "report.json"), ("page", folder / "report.html"),
                       ("junit", run["root"] / "junit.xml")):
        assert f"{kind}: {path}" in lines and path.is_file()
    assert schema_problems(rep) == []
    assert rep["command_line"] == ["bridge", *run["args"]]
    assert rep["bridge_version"] == metadata.version("bridge-convert")
    assert rep["samples"]["parity"]["origin"] == "calibration" and rep["samples"]["calibration"]["origin"] == "user"
    int8 = rep["artifacts"][2]["parity"]
    assert int8["reason"].startswith("output: snr_db 35.") and int8["introduced_at"] == "onnx->target"
    assert (int8["inputs"], int8["calibration"]) == ("calibration", "user")


def _colour_pixels(png: bytes, colour: tuple[int, int, int]) -> int:
    import io

    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    return int((pixels == np.array(colour, np.uint8)).all(axis=-1).sum())


def test_headless_chromium_shows_every_artifact_and_the_plots_and_fetches_nothing(run):
    page, rep = run["folder"] / "report.html", run["report"]
    html = page.read_text()
    loaded = chromium.load(page.as_uri(), binary=chromium.required())
    assert loaded.requests == [page.as_uri()], "the page asked for something besides itself"
    assert external_references(html) == []
    text = loaded.text
    assert text.startswith("bridge convert: shapes_cnn")
    assert "FAILED · exit 1\n4 artifacts: 3 passed, 1 failed parity" in text
    for a in rep["artifacts"]:
        assert text.count(a["path"]) >= 3, a["path"]  # problems or artifacts table, parity table, details
    assert "failed shapes_cnn_int8.tflite (tflite int8): output: snr_db 35." in text
    assert shlex.join(rep["command_line"]) in text
    figures = {f["id"]: f for f in loaded.figures}
    assert list(figures) == ["plot-overview", "plot-histogram-1"]
    for f in figures.values():
        assert f["width"] > 500 and f["height"] > 150 and f["shapes"] > 10, f
    overview = loaded.screenshots["plot-overview"]
    # painted, not just present: three passing bars in green, the failing one in red
    assert _colour_pixels(overview, GREEN) > 3 * _colour_pixels(overview, RED) > 300
    assert _colour_pixels(loaded.screenshots["plot-histogram-1"], FIRST_LINE) > 50
    assert len(html.encode()) < 150_000, "the page should stay small"


def test_the_junit_file_has_one_case_per_artifact_and_failures_where_the_report_says(run):
    rep = run["report"]
    (suite,) = list(JUnitXml.fromfile(str(run["root"] / "junit.xml")))
    cases = list(suite)
    assert [(c.classname, c.name) for c in cases] == [(f"shapes_cnn.{a['target']}", f"{a['quantization']} {a['path']}")
                                                      for a in rep["artifacts"]]
    failing = [c.name for c in cases if any(isinstance(r, Failure) for r in c.result)]
    failed = [a for a in rep["artifacts"] if a["parity"]["status"] == "failed"]
    assert failing == [f"{a['quantization']} {a['path']}" for a in failed] and len(failed) == 1
    assert (suite.tests, suite.failures, suite.errors) == (4, 1, 0)
    (failure,) = next(c for c in cases if c.result).result
    assert failure.message == rep["artifacts"][2]["parity"]["reason"]
    for c, a in zip(cases, rep["artifacts"], strict=True):
        assert c.time == pytest.approx(a["seconds"] + a["parity"]["seconds"], abs=2e-3)


def test_validate_writes_the_page_the_junit_file_and_the_report(validated):
    r, rep = validated["result"], validated["report"]
    assert r.returncode == 1, r.stderr[-3000:]
    assert schema_problems(rep) == [] and rep["command"] == "validate" and rep["hub"] is None
    assert [a["parity"]["status"] for a in rep["artifacts"]] == ["passed", "passed", "failed"]
    assert rep["samples"]["parity"] == {"origin": "synthetic", "count": 8, "seed": 0,
                                        "detail": "x: drawn from its example values [0, 1]"}
    (suite,) = list(JUnitXml.fromfile(str(validated["junit"])))
    assert [bool(c.result) for c in suite] == [False, False, True]
    html = validated["page"].read_text()
    assert "bridge validate: shapes_cnn" in html and external_references(html) == []
    for a in rep["artifacts"]:
        assert a["path"] in html


def test_the_validate_page_opens_offline_too(validated):
    page = validated["page"]
    loaded = chromium.load(page.as_uri(), binary=chromium.required())
    assert loaded.requests == [page.as_uri()]
    assert "FAILED · exit 1\n3 artifacts: 2 passed, 1 failed parity" in loaded.text
    assert [f["id"] for f in loaded.figures] == ["plot-overview", "plot-histogram-1"]


def test_report_options_never_write_over_an_input_or_a_users_file(tmp_path):
    """Each refused before anything runs: exit 2, one line."""
    src = _tiny(tmp_path, 0)
    notes = tmp_path / "notes.xml"
    notes.write_text("<mine/>")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "report.html").write_text("<p>my page</p>")
    cases = [
        (["validate", src, src, "--html", src], "is an input of this run"),
        (["validate", src, src, "--junit", notes], "is not a bridge JUnit file"),
        (["validate", src, src, "--html", tmp_path / "x", "--junit", tmp_path / "x"],
         "--html and --junit name the same file"),
        (["convert", src, "--target", "onnx", "--out", tmp_path / "o", "--junit", tmp_path / "o" / "report.json"],
         "bridge writes its report and artifacts there"),
        (["convert", src, "--target", "onnx", "--out", tmp_path / "out"], "report.html exists and is not a"),
    ]
    for args, message in cases:
        r = bridge(*args, cwd=tmp_path)
        assert r.returncode == 2 and message in r.stderr, (args, r.stderr[-2000:])
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert notes.read_text() == "<mine/>" and (tmp_path / "out" / "report.html").read_text() == "<p>my page</p>"


def _tiny(folder: Path, seed: int) -> Path:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(seed).standard_normal((4, 4)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], initializer=[w])
    path = folder / f"seed{seed}" / "tiny.onnx"
    path.parent.mkdir(parents=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_a_version_1_report_left_by_an_earlier_run_still_owns_its_artifacts(tmp_path):
    """Runs before version 2 left v1 reports in their --out: the files they list are still bridge's
    to replace, and a file changed since is still the user's."""
    out = tmp_path / "out"
    r = bridge("convert", _tiny(tmp_path, 0), "--target", "onnx", "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    shipped = json.loads((out / "report.json").read_text())["artifacts"][0]
    v1 = json.loads((Path(__file__).parents[1] / "bridge" / "data" / "report-v1-convert.json").read_text())
    old = v1["artifacts"][0]
    v1["artifacts"] = [{**old, "path": shipped["path"], "sha256": shipped["sha256"], "bytes": shipped["bytes"]}]
    forge_report(out / "report.json", v1)  # as an earlier bridge would have left it
    (out / "report.html").unlink()

    r = bridge("convert", _tiny(tmp_path, 1), "--target", "onnx", "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads((out / "report.json").read_text())
    assert rep["schema"] == "bridge.report/2" and rep["artifacts"][0]["sha256"] != shipped["sha256"]
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json", "tiny.onnx"]

    v1["artifacts"][0]["sha256"] = "0" * 64  # the file no longer matches what the v1 report recorded
    forge_report(out / "report.json", v1)
    r = bridge("convert", _tiny(tmp_path, 2), "--target", "onnx", "--out", out)
    assert r.returncode == 2 and "exists and no earlier bridge report" in r.stderr
