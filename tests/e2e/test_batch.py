"""`bridge batch`: a zoo of four models (a torch entrypoint, a Keras file, an ONNX file, and one that
fails on purpose) through the installed console script, with real conversions.

- `--executor local --jobs 2` and `--executor ray` (on a Ray instance the test starts) give the
  same summary and byte-identical artifacts, and each model's folder is what `bridge convert`
  writes for it; the failing model fails alone.
- The stage cache: a re-run reuses every stage; a changed quantize list re-runs its lane only; a
  changed weight file re-runs the export (and changing it back reuses the first export again); an
  edited imported module re-runs the export, but a hub that comes out the same reuses the lanes.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from benchmarks.batch_zoo import EXIT, SINGLE, build, write_matrix
from bridge.base.files import sha256
from tests.conftest import SAMPLES, bridge

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    """The zoo of benchmarks/batch_zoo.py: the entrypoint and its weights copied (the cache tests
    edit them), an ONNX file made from them, the broken model, the matrix."""
    folder = tmp_path_factory.mktemp("zoo")
    build(folder)
    return folder


def _batch(zoo: Path, out: str, *args, matrix: str = "matrix-fp32.toml"):
    return bridge("batch", matrix, "--out", out, *args, cwd=zoo, timeout=1800)


def _summary(zoo: Path, out: str) -> dict:
    return json.loads((zoo / out / "summary.json").read_text())


def _stable(summary: dict) -> dict:
    """What must not depend on the executor, the cache or the clock."""
    return {"exit_code": summary["exit_code"], "counts": summary["counts"],
            "models": [{k: v for k, v in m.items() if k not in ("seconds", "stages")} for m in summary["models"]]}


def _files(folder: Path) -> dict[str, str]:
    """Each artifact beside a report (not the report nor its page: they hold timings), by name, with
    its sha256."""
    return {p.name: sha256(p) for p in sorted(folder.iterdir()) if not p.name.startswith(".") and
            p.name not in ("report.json", "report.html")}


def _model_folder(root: Path, model: dict) -> Path:
    return (root / model["report"]).parent


@pytest.fixture(scope="module")
def cold(zoo) -> dict:
    """The local batch, cold, filling the cache the cache tests use."""
    r = _batch(zoo, "out-local", "--executor", "local", "--jobs", "2", "--cache-dir", zoo / "cache")
    assert r.returncode == 3, r.stderr[-5000:]
    return {"result": r, "summary": _summary(zoo, "out-local")}


def test_local_batch_writes_what_bridge_convert_writes(zoo, cold):
    summary, r = cold["summary"], cold["result"]
    assert {m["name"]: m["exit_code"] for m in summary["models"]} == EXIT
    assert summary["exit_code"] == 3 and summary["counts"] == {"models": 4, "passed": 3, "failed": 1}
    broken = summary["models"][3]
    assert broken["report"] == "broken/.bridge-failed/report.json"  # a failed run publishes nothing
    refused = [a for a in broken["artifacts"] if a["target"] == "coreml"]
    assert refused[0]["status"] == "error" and refused[0]["exit_code"] == 3
    report = json.loads((zoo / "out-local" / broken["report"]).read_text())
    assert "Det" in report["artifacts"][1]["error"]["message"]
    for name in EXIT:  # one line per model in the log, then the table
        assert f"{name}: " in r.stderr and name in r.stdout
    assert "1 of 4 models failed (exit 3" in r.stderr
    from xml.etree import ElementTree as ET

    suites = ET.parse(zoo / "out-local" / "junit.xml").getroot().findall("testsuite")  # one per model
    assert [s.get("name").split()[2] for s in suites] == list(EXIT)
    assert [int(s.get("errors")) for s in suites] == [0, 0, 0, 1]
    page = (zoo / "out-local" / "summary.html").read_text()
    assert all(f'href="{name}/' in page or f'href="{name}/.bridge-failed/' in page for name in EXIT)
    for model in summary["models"]:
        single = bridge("convert", *SINGLE[model["name"]], "--out", f"single/{model['name']}", "--no-cache",
                        cwd=zoo)
        assert single.returncode == model["exit_code"], single.stderr[-3000:]
        folder = _model_folder(zoo / "out-local", model)
        mine = zoo / "single" / model["name"] / folder.relative_to(zoo / "out-local" / model["name"])
        assert _files(folder) == _files(mine), model["name"]
        assert {a["path"]: a["sha256"] for a in model["artifacts"] if a["path"]} == \
            {k: v for k, v in _files(folder).items()}


def test_ray_batch_gives_the_same_summary_and_bytes(zoo, cold):
    ray = pytest.importorskip("ray")
    temp = tempfile.mkdtemp(prefix="br-", dir="/tmp")  # the cluster's session files, not left in /tmp/ray
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False, logging_level="ERROR", _temp_dir=temp)
    try:
        address = ray.get_runtime_context().gcs_address
        r = _batch(zoo, "out-ray", "--executor", "ray", "--ray-address", address, "--no-cache")
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
    assert r.returncode == 3, r.stderr[-5000:]
    ray_summary = _summary(zoo, "out-ray")
    assert ray_summary["executor"]["executor"] == "ray"
    assert _stable(ray_summary) == _stable(cold["summary"])
    for model in cold["summary"]["models"]:
        ours = _model_folder(zoo / "out-local", model)
        theirs = _model_folder(zoo / "out-ray", model)
        assert _files(ours) == _files(theirs), model["name"]


def test_a_rerun_reuses_every_stage(zoo, cold):
    """Every stage, verdict and figure of the pages comes from the cache: nothing is converted, judged
    or drawn (matplotlib and numpy are never imported), yet the artifacts and figures are the cold
    run's."""
    r = bridge("batch", "matrix-fp32.toml", "--out", "out-warm", "--cache-dir", zoo / "cache", "--jobs", "2",
               cwd=zoo, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert r.returncode == 3, r.stderr[-5000:]
    imported = set(re.findall(r"^import time: +\d+ \| +\d+ \| +([\w.]+)$", r.stderr, flags=re.M))
    assert "bridge.conversion" in imported  # (the import log is on)
    # nor numpy (no array is read: verdicts come from the cache too), nor the other commands' modules
    assert not {"matplotlib", "torch", "tensorflow", "coremltools", "onnxruntime", "numpy",
                "bridge.commands.convert", "bridge.commands.validate"} & imported
    warm = _summary(zoo, "out-warm")
    assert _stable(warm) == _stable(cold["summary"])
    assert all(m["stages"]["ran"] == 0 and m["stages"]["reused"] > 0 for m in warm["models"]), warm["models"]
    for model in warm["models"]:
        ours, first = _model_folder(zoo / "out-warm", model), _model_folder(zoo / "out-local", model)
        assert _files(ours) == _files(first)
        assert _svgs(ours / "report.html") == _svgs(first / "report.html") != []


def _svgs(page: Path) -> list[str]:
    return re.findall(r"<svg.*?</svg>", page.read_text(), flags=re.S)


def _runs(zoo: Path, out: str, name: str) -> list[tuple[str, str]]:
    model = next(m for m in _summary(zoo, out)["models"] if m["name"] == name)
    report = json.loads((zoo / out / model["report"]).read_text())
    return [(s["stage"], s["cache"]) for s in report["stage_runs"]]


def test_a_changed_quantize_list_reruns_only_its_lane(zoo, cold):
    r = _batch(zoo, "out-fp16", "--cache-dir", zoo / "cache", matrix=write_matrix(zoo, "fp32,fp16").name)
    assert r.returncode == 3, r.stderr[-5000:]
    ran = {name: [s for s, how in _runs(zoo, "out-fp16", name) if how == "ran"] for name in EXIT}
    # the new fp16 file is converted and run; the fp32 file comes out the same, so its run is reused
    assert ran == {"cnn-torch": ["tflite-convert", "tflite-runtime"], "cnn-keras": [], "cnn-onnx": [], "broken": []}
    folder = zoo / "out-fp16" / "cnn-torch"
    assert sha256(folder / "shapes_cnn_fp32.tflite") == sha256(zoo / "out-local" / "cnn-torch" /
                                                               "shapes_cnn_fp32.tflite")
    assert (folder / "shapes_cnn_fp16.tflite").is_file()


def _convert_onnx(zoo: Path, out: str):
    r = bridge("convert", "shapes_cnn.py:load", "--target", "onnx", "--target", "tflite", "--quantize", "tflite=fp32",
               "--out", out, "--cache-dir", zoo / "cache", cwd=zoo)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((zoo / out / "report.json").read_text())
    return {s["stage"]: s["cache"] for s in report["stage_runs"]}, sha256(zoo / out / "shapes_cnn.onnx")


def test_a_changed_weight_file_is_never_served_from_the_cache(zoo, cold):
    torch = pytest.importorskip("torch")
    before = sha256(zoo / "out-local" / "cnn-torch" / "shapes_cnn.onnx")
    weights = zoo / "shapes_cnn.pt"
    original = weights.read_bytes()
    state = torch.load(weights, weights_only=True)
    state["head.bias"] = state["head.bias"] + 0.25
    torch.save(state, weights)
    try:
        runs, after = _convert_onnx(zoo, "out-weights")
        assert runs["export"] == "ran" and runs["tflite-convert"] == "ran"
        assert after != before
    finally:
        weights.write_bytes(original)
    runs, again = _convert_onnx(zoo, "out-weights-back")  # the first weights again: the first export again
    assert runs["export"] == "reused" and again == before


def test_an_edited_module_reruns_the_export_and_an_unchanged_hub_keeps_the_lanes(zoo, cold):
    # this command's own stages cached first (the batch's hub run measured activations for Core ML
    # fp16, a different stage): the test must not lean on another test having run it
    _, before = _convert_onnx(zoo, "out-module-before")
    module = zoo / "shapes.py"  # imported by the entrypoint, not named on the command line
    original = module.read_text()
    module.write_text(original + "\n# edited\n")
    try:
        runs, hub = _convert_onnx(zoo, "out-module")
    finally:
        module.write_text(original)
    assert runs["export"] == "ran"
    assert hub == before == sha256(zoo / "out-local" / "cnn-torch" / "shapes_cnn.onnx")
    assert runs["onnx-runtime"] == "reused" and runs["tflite-convert"] == "reused"


def test_ray_without_an_address_starts_and_stops_its_own_instance(tmp_path):
    pytest.importorskip("ray")
    shutil.copy(SAMPLES / "shapes_keras.keras", tmp_path / "k.keras")
    (tmp_path / "m.toml").write_text('[[model]]\nname = "k"\nsource = "k.keras"\ntargets = ["onnx"]\n')
    # the process's temporary folder (Ray's default root too: <temp>/ray), short as Ray's sockets need
    temp = Path(tempfile.mkdtemp(prefix="br-", dir="/tmp"))
    try:
        r = bridge("batch", "m.toml", "--executor", "ray", "--jobs", "1", "--no-cache", cwd=tmp_path, timeout=900,
                   env={"TMPDIR": str(temp)})
        left = sorted(p.name for p in temp.iterdir())
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "bridge-out" / "summary.json").read_text())
    assert summary["executor"] == {"executor": "ray", "address": "local", "nodes": 1}
    assert (tmp_path / "bridge-out" / "k" / "k.onnx").is_file()
    assert left == []  # the instance's session folder went with it
