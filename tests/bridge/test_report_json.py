"""report.json version 2: what it records, its published schema, and the reader that still takes the
version 1 reports earlier runs left (`tests/bridge/data/report-v1-*.json` were written by bridge
before version 2: a convert of the bundled CNN to ONNX, TFLite fp32/int8 and Core ML fp16, and a
validate of two of those files)."""

from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path

import jsonschema
import pytest

from bridge import ConvertOptions, convert
from bridge.lanes import registered
from bridge.reporters.json import read, upgrade
from tests.bridge import fake_lane
from tests.conftest import REPORT_SCHEMA, forge_report, schema_problems

DATA = Path(__file__).parent / "data"

pytest.importorskip("onnxruntime")


@pytest.fixture
def source(tmp_path):
    return fake_lane.tiny_onnx(tmp_path / "src")


def test_the_schema_is_a_valid_2020_12_schema_shipped_in_the_package():
    jsonschema.Draft202012Validator.check_schema(REPORT_SCHEMA)
    assert REPORT_SCHEMA["properties"]["schema"] == {"const": "bridge.report/2"}


def test_a_run_records_its_command_time_version_and_sample_origins(source, tmp_path):
    with registered(fake_lane.LANE):
        report = convert(source, ConvertOptions(targets=("onnx", "fake"), quantize=("fake=exact,wrong",),
                                                out=str(tmp_path / "o")), command_line=["bridge", "convert", "x"])
    doc = json.loads(report.path.read_text())
    assert schema_problems(doc) == []
    assert (doc["schema"], doc["command"], doc["command_line"]) == ("bridge.report/2", "convert", ["bridge", "convert",
                                                                                                  "x"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", doc["created"]) and doc["seconds"] > 0
    assert doc["bridge_version"] == metadata.version("bridge-convert")
    assert doc["samples"] == {"parity": {"origin": "synthetic", "count": 8, "seed": 0,  # nothing calibrated
                                         "detail": "x: standard normal (no example input or data describes it: "
                                                   "give --parity-data)"}}
    onnx, exact, wrong = doc["artifacts"]
    assert {a["parity"]["inputs"] for a in doc["artifacts"]} == {"synthetic"}
    # source->onnx once, as `hub`; each artifact made from the hub carries only its onnx->target stage
    assert doc["hub"]["outputs"]["y"]["rel_l2"] == 0 and doc["hub"]["opset"] == 17
    folding = doc["hub"]["folding"]  # a static source: nothing to fix, so no symbolic inference
    assert (folding["written"], folding["shape_ops_left"], folding["symbolic_inference"]) == ([], {}, "not needed")
    assert "stages" not in onnx["parity"] and set(exact["parity"]["stages"]) == {"onnx->target"}
    assert wrong["parity"]["introduced_at"] == "onnx->target" and "introduced_at" not in exact["parity"]
    assert wrong["parity"]["outputs"]["y"]["rel_l2"] == 0.5 and wrong["parity"]["seconds"] > 0
    assert "seeds" not in doc["environment"] and "calibration" not in doc["environment"]


def test_the_python_api_records_no_command_line(source, tmp_path):
    report = convert(source, ConvertOptions(targets=("onnx",), out=str(tmp_path / "o")))
    assert json.loads(report.path.read_text())["command_line"] is None


@pytest.mark.parametrize("name", ["report-v1-convert.json", "report-v1-validate.json"])
def test_version_1_reports_are_read_in_version_2_shape(name):
    old = json.loads((DATA / name).read_text())
    assert old["schema"] == "bridge.report/1"
    doc = read(DATA / name)
    assert schema_problems(doc) == [], "an upgraded report must be a valid version 2 report"
    assert doc["upgraded_from"] == "bridge.report/1" and doc["created"] is None and doc["command_line"] is None
    assert [a["sha256"] for a in doc["artifacts"]] == [a["sha256"] for a in old["artifacts"]]
    assert [a["parity"]["status"] for a in doc["artifacts"]] == [a["parity"]["status"] for a in old["artifacts"]]
    assert doc["source"]["name"] == "shapes_cnn"
    for a in doc["artifacts"]:
        assert "source->onnx" not in (a["parity"].get("stages") or {})
        assert {t["dtype"] for side in ("inputs", "outputs") for t in a["io"][side]} == {"float32"}


def test_a_version_1_convert_report_keeps_what_it_knew():
    doc = read(DATA / "report-v1-convert.json")
    old = json.loads((DATA / "report-v1-convert.json").read_text())
    assert doc["command"] == "convert" and doc["bridge_version"] == "0.1.0"
    assert doc["hub"]["opset"] == 17
    assert doc["hub"]["outputs"] == old["artifacts"][0]["parity"]["stages"]["source->onnx"]
    # v1 said where parity samples came from only in a warning, and the calibration set as a string
    assert doc["samples"] == {"parity": {"origin": "calibration", "count": 8, "path": "samples/calibration"},
                              "calibration": {"origin": "user", "count": 16, "path": "samples/calibration"}}
    int8 = doc["artifacts"][2]
    assert (int8["quantization"], int8["parity"]["inputs"], int8["parity"]["calibration"]) == ("int8", "calibration",
                                                                                                "user")
    coreml = doc["artifacts"][3]
    assert [t["dtype"] for t in old["artifacts"][3]["io"]["inputs"]] == ["fp32"]  # what v1 wrote for Core ML
    assert [t["dtype"] for t in coreml["io"]["inputs"]] == ["float32"]


def test_a_version_1_report_with_shape_folding_keeps_it_as_hub_folding():
    """Issue 11's branch wrote what the hub folded as `source.hub` in version 1 reports."""
    old = json.loads((DATA / "report-v1-convert.json").read_text())
    folding = {"inputs": {"x": [1, 3, 48, 320]}, "written": ["x"], "nodes_before": 40, "nodes_after": 12,
               "removed": {"Shape": 7, "Gather": 7}, "shape_ops_left": {}, "symbolic_inference": "used"}
    old["source"]["hub"] = folding
    doc = upgrade(old)
    assert schema_problems(doc) == [] and doc["hub"]["folding"] == folding and "hub" not in doc["source"]
    doc["hub"]["folding"]["removed"] = {"Shape": 0}  # a count of nothing removed is not a removal
    assert schema_problems(doc) != []


def test_a_version_1_validate_report_is_a_validate_report():
    doc = read(DATA / "report-v1-validate.json")
    assert doc["command"] == "validate" and doc["hub"] is None
    assert doc["samples"]["parity"]["origin"] == "synthetic"
    failed = doc["artifacts"][1]
    assert failed["parity"]["status"] == "failed" and "introduced_at" not in failed["parity"]


@pytest.mark.parametrize("doc", [[], {"schema": "bridge.report/3"}, {"schema": None}, {"artifacts": []}])
def test_unknown_documents_are_refused(doc, tmp_path):
    with pytest.raises(ValueError, match="not a bridge report"):
        upgrade(doc)
    with pytest.raises(ValueError):
        read(forge_report(tmp_path / "r.json", doc))
