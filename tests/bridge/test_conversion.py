"""The orchestrator, driven by a fake lane (tests/bridge/fake_lane.py) on a tiny ONNX source:
planning from the lane's table, judging with the lane's thresholds, errors and preflight refusals
as records, and publishing only runs that passed. Real stages and runtimes; no framework beyond
onnxruntime, so these run in seconds."""

from __future__ import annotations

import json

import pytest

from bridge import ConvertOptions, convert
from bridge.base.errors import UsageError
from bridge.lanes import registered
from tests.bridge import fake_lane

pytest.importorskip("onnxruntime")


@pytest.fixture
def source(tmp_path):
    return fake_lane.tiny_onnx(tmp_path / "src", relu=True)


@pytest.fixture(autouse=True)
def fake():
    with registered(fake_lane.LANE):
        yield


def test_each_mode_is_judged_by_its_own_row(source, tmp_path):
    report = convert(source, ConvertOptions(targets=("fake",), quantize=("fake=exact,close",), out=str(tmp_path / "o")))
    assert report.exit_code == 0
    exact, close = report.artifacts
    assert exact.parity.thresholds["y"] == {"rel_l2_max": 1e-4} and exact.parity.outputs["y"]["rel_l2"] == 0
    assert close.parity.thresholds["y"] == {"snr_db_min": 50.0}
    assert close.parity.outputs["y"]["snr_db"] == pytest.approx(60.0, abs=0.1)  # 0.1% off: 60 dB
    assert set(exact.parity.stages) == {"onnx->target"} and report.hub["outputs"]["y"]["rel_l2"] == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["report.html", "report.json", "tiny_close.fake",
                                                                  "tiny_exact.fake"]


def test_a_wrong_artifact_fails_and_nothing_is_published(source, tmp_path):
    out = tmp_path / "o"
    report = convert(source, ConvertOptions(targets=("fake",), quantize=("fake=wrong",), out=str(out)))
    assert report.exit_code == 1 and report.artifacts[0].parity.status == "failed"
    assert "rel_l2 0.5 > 0.0001 (error introduced at onnx->target)" in report.artifacts[0].parity.reason
    assert report.artifacts[0].parity.introduced_at == "onnx->target"
    assert sorted(p.name for p in out.iterdir()) == [".bridge-failed"]
    assert json.loads((out / ".bridge-failed" / "report.json").read_text())["exit_code"] == 1


def test_a_conversion_error_becomes_the_record_of_every_mode(source, tmp_path):
    report = convert(source, ConvertOptions(targets=("fake",), quantize=("fake=exact,close",), out=str(tmp_path / "o"),
                                            lanes={"fake": {"crash": True}}))
    assert report.exit_code == 3
    for art in report.artifacts:
        assert (art.error.stage, art.error.node, art.error.op_type) == ("fake-convert", "n1", "Mul")
        assert art.error.message == f"{art.quantization} could not be made"
        assert art.parity.status == "not_executed"


def test_the_preflight_names_refused_ops_before_converting(source, tmp_path):
    report = convert(source, ConvertOptions(targets=("onnx", "fake"), out=str(tmp_path / "o"),
                                            lanes={"fake": {"refuse": "Relu"}}))
    onnx, fake = report.artifacts
    assert onnx.parity.passed and report.exit_code == 3
    assert fake.error.stage == "fake-preflight" and fake.error.op_type == "Relu" and fake.error.node == "act"
    assert fake.error.message == "1 op type(s) the fake lane refuses: Relu (act)"


def test_lane_options_are_checked_against_the_lanes_targeted(source, tmp_path):
    with pytest.raises(UsageError, match="--fake-crash needs --target fake"):
        convert(source, ConvertOptions(targets=("onnx",), out=str(tmp_path / "o"), lanes={"fake": {"crash": True}}))
    with pytest.raises(UsageError, match="fake options: .*unexpected keyword argument 'colour'"):
        convert(source, ConvertOptions(targets=("fake",), out=str(tmp_path / "o"), lanes={"fake": {"colour": 1}}))
    with pytest.raises(UsageError, match="fake has no mode int8; valid: exact, close, wrong"):
        convert(source, ConvertOptions(targets=("fake",), quantize=("fake=int8",), out=str(tmp_path / "o")))
    assert not (tmp_path / "o").exists()


def test_the_hub_artifact_is_run_once(source, tmp_path):
    """The ONNX artifact is the hub's bytes: the hub's onnxruntime run is its parity run."""
    report = convert(source, ConvertOptions(targets=("onnx",), out=str(tmp_path / "o")))
    onnx = report.artifacts[0]
    assert onnx.parity.passed and onnx.parity.stages == {}  # its parity is the hub's: `report.hub`
    assert onnx.parity.outputs["y"]["rel_l2"] == 0


def test_a_verdict_comes_from_the_cache_only_for_the_same_arrays_and_thresholds(source, tmp_path, monkeypatch):
    """A warm run takes each artifact's verdict from the stage cache instead of reading its outputs
    again; a threshold it was not judged with judges the same cached outputs again."""
    from bridge import conversion
    from bridge.cache import StageCache

    judged = []
    real = conversion.judge
    monkeypatch.setattr(conversion, "judge", lambda **kw: judged.append(kw["thresholds"]) or real(**kw))
    cache = StageCache(tmp_path / "cache")

    def run(out: str, *thresholds: str):
        return convert(source, ConvertOptions(targets=("fake",), quantize=("fake=close",), out=str(tmp_path / out),
                                              thresholds=thresholds), cache=cache)

    first = run("o1")
    assert first.exit_code == 0 and len(judged) == 1
    again = run("o2")
    assert again.exit_code == 0 and len(judged) == 1  # same outputs, same thresholds: not judged again
    assert {s["cache"] for s in again.stage_runs} == {"reused"}
    assert again.artifacts[0].parity.outputs == first.artifacts[0].parity.outputs
    assert again.artifacts[0].parity.outputs["y"]["snr_db"] == pytest.approx(60.0, abs=0.1)
    assert again.hub == first.hub
    stricter = run("o3", "snr_db=70")  # the same cached outputs (60 dB), judged again: they fail
    assert len(judged) == 2 and stricter.exit_code == 1
    assert stricter.artifacts[0].parity.thresholds["y"] == {"snr_db_min": 70.0}
