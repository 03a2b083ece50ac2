"""`--junit`: the verdicts as JUnit XML, read back with junitparser (a parser bridge does not use to
write them). Runs the orchestrator with the fake lane (tests/bridge/fake_lane.py), whose modes are
right, wrong or crashing on purpose; the figures come from real onnxruntime runs."""

from __future__ import annotations

import json

import pytest
from junitparser import Error, Failure, JUnitXml

from bridge import ConvertOptions, convert
from bridge.base.errors import UsageError
from bridge.lanes import registered
from bridge.reporters.junit import is_junit, render
from tests.bridge import fake_lane

pytest.importorskip("onnxruntime")


@pytest.fixture
def source(tmp_path):
    return fake_lane.tiny_onnx(tmp_path / "src")


@pytest.fixture(autouse=True)
def fake():
    with registered(fake_lane.LANE):
        yield


def cases(path) -> dict[tuple[str, str], object]:
    suites = list(JUnitXml.fromfile(str(path)))
    assert len(suites) == 1
    return {(c.classname, c.name): c for c in suites[0]}


def test_one_case_per_artifact_and_failures_where_the_report_says(source, tmp_path):
    junit = tmp_path / "ci" / "bridge.xml"
    report = convert(source, ConvertOptions(targets=("onnx", "fake"), quantize=("fake=exact,close,wrong",),
                                            thresholds=("close@snr_db=80",), out=str(tmp_path / "o"),
                                            junit=str(junit)))
    assert report.exit_code == 1 and report.written["junit"] == junit
    doc = json.loads(report.path.read_text())
    found = cases(junit)
    assert list(found) == [("tiny.onnx", "fp32 tiny.onnx"), ("tiny.fake", "exact tiny_exact.fake"),
                           ("tiny.fake", "close tiny_close.fake"), ("tiny.fake", "wrong tiny_wrong.fake")]
    for a, case in zip(doc["artifacts"], found.values(), strict=True):
        results = case.result
        if a["parity"]["status"] == "failed":
            assert len(results) == 1 and isinstance(results[0], Failure)
            assert results[0].message == a["parity"]["reason"]
        else:
            assert results == [] and a["parity"]["status"] == "passed"
        assert case.time == pytest.approx(a["seconds"] + a["parity"]["seconds"], abs=2e-3)
    assert [a["parity"]["status"] for a in doc["artifacts"]] == ["passed", "passed", "failed", "failed"]
    close = found[("tiny.fake", "close tiny_close.fake")].result[0]
    assert close.message == "y: snr_db 60.0 < 80 (error introduced at onnx->target)"
    assert "y: max_abs" in close.text and "snr_db 60.0" in close.text and "snr_db_min 80.0" in close.text
    suite = next(iter(JUnitXml.fromfile(str(junit))))
    assert (suite.tests, suite.failures, suite.errors) == (4, 2, 0)


def test_artifacts_that_could_not_be_made_are_errors(source, tmp_path):
    junit = tmp_path / "bridge.xml"
    report = convert(source, ConvertOptions(targets=("onnx", "fake"), quantize=("fake=exact,wrong",),
                                            out=str(tmp_path / "o"), lanes={"fake": {"crash": True}},
                                            junit=str(junit)))
    assert report.exit_code == 3
    found = cases(junit)
    assert found[("tiny.onnx", "fp32 tiny.onnx")].result == []
    for mode in ("exact", "wrong"):
        (error,) = found[("tiny.fake", f"{mode} (not written)")].result
        assert isinstance(error, Error) and error.type == "fake-convert"
        assert error.message == f"stage fake-convert at Mul node n1: {mode} could not be made"


def test_text_xml_cannot_hold_is_replaced():
    """Error messages carry what libraries print: terminal colours, NUL bytes."""
    doc = {"command": "convert", "source": {"path": "m.onnx", "name": "m"}, "created": None, "command_line": None,
           "bridge_version": "0", "exit_code": 3,
           "artifacts": [{"target": "onnx", "quantization": "fp32", "path": None, "seconds": 0.0,
                          "error": {"stage": "export", "node": None, "op_type": None,
                                    "message": "\x1b[31mboom\x00 <&> ]]>"}, "parity": None}]}
    xml = render(doc)
    (error,) = next(iter(next(iter(JUnitXml.fromstring(xml))))).result
    assert error.message == "stage export: \ufffd[31mboom\ufffd <&> ]]>"


def test_junit_never_replaces_a_file_it_did_not_write(source, tmp_path):
    notes = tmp_path / "notes.xml"
    notes.write_text("<notes>mine</notes>")
    with pytest.raises(UsageError, match="is not a bridge JUnit file"):
        convert(source, ConvertOptions(targets=("onnx",), out=str(tmp_path / "o"), junit=str(notes)))
    assert notes.read_text() == "<notes>mine</notes>" and not is_junit(notes)
    with pytest.raises(UsageError, match="is an input of this run"):
        convert(source, ConvertOptions(targets=("onnx",), out=str(tmp_path / "o"), junit=source))
    for name in ("report.json", "tiny.onnx"):  # files the run itself writes into --out
        with pytest.raises(UsageError, match="bridge writes its report and artifacts there"):
            convert(source, ConvertOptions(targets=("onnx",), out=str(tmp_path / "o"),
                                           junit=str(tmp_path / "o" / name)))
    ok = tmp_path / "ok.xml"
    convert(source, ConvertOptions(targets=("onnx",), out=str(tmp_path / "o"), junit=str(ok)))
    assert is_junit(ok)
    convert(source, ConvertOptions(targets=("onnx",), out=str(tmp_path / "o"), junit=str(ok)))  # its own: replaced
