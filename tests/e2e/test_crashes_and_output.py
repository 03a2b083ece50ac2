"""Crashing stages, killed runs, re-runs into the same folder and byte-identical artifacts.

Crashes come from `bridge.stages.Fault` objects the tests pass in (through `tests/e2e/faulty.py`,
which runs the Python API in a subprocess and prints like the console script): a named stage's
child segfaults, aborts or hangs before it imports anything, or the gateway hangs while placing an
artifact so the test can SIGKILL it at that exact moment. Everything else is real.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from bridge.base.files import sha256, size
from tests.conftest import BRIDGE, ROOT, SAMPLES, artifact, bridge, report, report_folder

pytestmark = pytest.mark.slow


def tiny(tmp_path: Path, seed: int = 0) -> Path:
    """`tiny.onnx`, conv-relu-conv with weights from `seed`: an ONNX source exports in about a
    second, so short timeouts still leave the stages that should finish plenty of time."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
               for n, s in (("w1", (8, 3, 3, 3)), ("b1", (8,)), ("w2", (4, 8, 1, 1)), ("b2", (4,)))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h"], ["r"]), helper.make_node("Conv", ["r", "w2", "b2"], ["output"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, 16, 16])], weights)
    path = tmp_path / f"seed{seed}" / "tiny.onnx"
    path.parent.mkdir(exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def listing(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir())


def assert_folder_matches_report(out: Path) -> dict:
    """The last run's report.json lists exactly the artifacts beside it (in `out`, or in
    `out/.bridge-failed` for a failed run), each with its bytes and sha256 on disk."""
    folder = report_folder(out)
    rep = report(out)
    shipped = {a["path"] for a in rep["artifacts"] if a["path"]}
    assert {n for n in listing(folder) if not n.startswith(".")} - {"report.json", "report.html"} == shipped
    for a in rep["artifacts"]:
        if a["path"]:
            assert sha256(folder / a["path"]) == a["sha256"] and size(folder / a["path"]) == a["bytes"]
    return rep


def stray_processes(mark: str, wait: float = 10.0) -> list[str]:
    """Command lines of processes still carrying `BRIDGE_TEST_MARK=mark` in their environment
    (everything a run started inherits it) after up to `wait` seconds; they are killed, so a
    failing test leaves nothing running on a shared machine."""
    if not Path("/proc/self/environ").exists():
        pytest.skip("needs /proc")
    needle = f"BRIDGE_TEST_MARK={mark}".encode()
    deadline = time.monotonic() + wait
    while True:
        found = {}
        for p in Path("/proc").iterdir():
            try:
                if p.name.isdigit() and needle in (p / "environ").read_bytes().split(b"\0"):
                    found[int(p.name)] = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:  # gone meanwhile, or not ours to read
                continue
        if not found or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for pid in found:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return sorted(found.values())


FAULTY = Path(__file__).with_name("faulty.py")


def faulty(*args, fault: str, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """Like `bridge(...)`, with `fault` ("point[:how]") injected (see faulty.py)."""
    return subprocess.run([sys.executable, str(FAULTY), "--fault", fault, *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def kill_at_hook(*args, fault: str, env: dict | None = None, timeout: float = 600) -> str:
    """Run a conversion until a `hang` fault says where it hangs, then SIGKILL it there; returns
    the stderr read so far."""
    proc = subprocess.Popen([sys.executable, str(FAULTY), "--fault", fault, *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    seen = []
    try:
        for line in proc.stderr:
            seen.append(line)
            if "bridge fault: hanging at" in line:
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait()
    finally:
        watchdog.cancel()
        proc.kill()
        proc.stderr.close()
    text = "".join(seen)
    assert proc.returncode == -signal.SIGKILL and "hanging at" in text, text[-3000:]
    return text


# --- Isolation: a crashing or hanging stage ends its own artifacts only -----------------------------

def test_export_segfault_fails_every_artifact(tmp_path):
    out = tmp_path / "out"
    r = faulty("convert", tiny(tmp_path), "--target", "onnx", "--target", "tflite", "--out", out,
               fault="export:segv")
    assert r.returncode == 3, r.stderr[-3000:]
    rep = report(out)
    assert rep["exit_code"] == 3 and not rep["passed"]
    assert [(a["target"], a["quantization"]) for a in rep["artifacts"]] == [("onnx", "fp32"), ("tflite", "fp32")]
    for a in rep["artifacts"]:
        assert a["error"]["stage"] == "export"
        assert a["error"]["message"].startswith("stage export crashed (signal 11, SIGSEGV)"), a["error"]
        assert a["parity"]["status"] == "not_executed" and a["path"] is None and a["sha256"] is None
    assert listing(out) == [".bridge-failed"] and listing(out / ".bridge-failed") == ["report.html", "report.json"]


@pytest.mark.parametrize("stage, targets, timeout", [
    ("export", ("onnx", "tflite"), 4),
    ("tflite-convert", ("onnx", "tflite"), 8),
    ("onnx-runtime", ("onnx",), 5),  # runs twice: on the hub, then for the ONNX artifact's parity
], ids=["export", "lane", "runtime"])
def test_a_hanging_stage_times_out_and_leaves_nothing_running(tmp_path, stage, targets, timeout):
    out, mark = tmp_path / "out", uuid.uuid4().hex
    start = time.monotonic()
    r = faulty("convert", tiny(tmp_path), *(a for t in targets for a in ("--target", t)), "--timeout", timeout,
               "--out", out, fault=f"{stage}:hang-tree", env={"BRIDGE_TEST_MARK": mark})
    elapsed = time.monotonic() - start
    assert r.returncode == 3, r.stderr[-3000:]
    rep = assert_folder_matches_report(out)
    failed = {"export": targets, "tflite-convert": ("tflite",), "onnx-runtime": ("onnx",)}[stage]
    for a in rep["artifacts"]:
        if a["target"] in failed:
            assert a["error"] == {"stage": stage, "node": None, "op_type": None,
                                  "message": f"stage {stage} timed out after {timeout} s"}
            assert a["parity"]["status"] == "not_executed"
        else:
            assert a["error"] is None and a["parity"]["passed"] and a["parity"]["outputs"]["output"]["rel_l2"] <= 1e-5
    assert timeout <= elapsed < 120
    # Each hanging child had started a process of its own: the timeout ended both.
    assert stray_processes(mark) == []


def test_killed_gateway_takes_its_running_stage_along(tmp_path):
    """SIGKILL of `bridge` itself while a stage runs: the stage's child dies with it (Linux)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("parent-death signal is Linux only")
    out, mark, tmp = tmp_path / "out", uuid.uuid4().hex, tmp_path / "tmp"
    tmp.mkdir()
    kill_at_hook("convert", tiny(tmp_path), "--target", "onnx", "--out", out, "--verbose",
                 fault="export:hang", env={"BRIDGE_TEST_MARK": mark, "TMPDIR": str(tmp)})
    assert stray_processes(mark) == []
    assert not (out / "report.json").exists()
    # What its children had in TMPDIR (a log each, a folder each) stays behind, named by its pid;
    # the next run, whatever it converts, removes it (and its own at exit).
    left = sorted(p.name for p in tmp.iterdir())
    dead = {name.split("-")[2] for name in left}
    assert left and all(name.startswith("bridge-stage-") for name in left) and len(dead) == 1, left
    r = subprocess.run([str(BRIDGE), "convert", tiny(tmp_path, seed=1), "--target", "onnx", "--out", tmp_path / "out2"],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "TMPDIR": str(tmp)})
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.name for p in tmp.iterdir()) == []


def test_lane_crash_keeps_the_other_targets(tmp_path):
    out = tmp_path / "out"
    r = faulty("convert", tiny(tmp_path), "--target", "onnx", "--target", "coreml", "--quantize", "coreml=fp32",
               "--out", out, fault="coreml-convert:segv")
    assert r.returncode == 3, r.stderr[-3000:]
    rep = assert_folder_matches_report(out)
    onnx = artifact(rep, "onnx", "fp32")
    assert onnx["parity"]["passed"] and onnx["parity"]["outputs"]["output"]["rel_l2"] <= 1e-5
    coreml = artifact(rep, "coreml", "fp32")
    assert coreml["error"]["stage"] == "coreml-convert"
    assert coreml["error"]["message"].startswith("stage coreml-convert crashed (signal 11, SIGSEGV)")
    assert coreml["parity"]["status"] == "not_executed" and coreml["path"] is None
    assert listing(out) == [".bridge-failed"]  # a failed run publishes nothing into --out
    assert listing(out / ".bridge-failed") == ["report.html", "report.json", "tiny.onnx"]
    assert "stage coreml-convert crashed" in r.stderr


def test_runtime_crash_fails_its_artifact_and_the_lanes_still_convert(tmp_path):
    """onnxruntime aborts on the hub: the ONNX artifact fails (exit 3), TFLite converts and passes
    against the source."""
    out = tmp_path / "out"
    r = faulty("convert", tiny(tmp_path), "--target", "onnx", "--target", "tflite", "--out", out,
               fault="onnx-runtime:abort")
    assert r.returncode == 3, r.stderr[-3000:]
    rep = assert_folder_matches_report(out)
    assert any(w.startswith("the ONNX hub could not run on onnxruntime: stage onnx-runtime crashed "
                            "(signal 6, SIGABRT)") for w in rep["warnings"]), rep["warnings"]
    onnx = artifact(rep, "onnx", "fp32")
    assert onnx["error"]["stage"] == "onnx-runtime"
    assert onnx["error"]["message"].startswith("stage onnx-runtime crashed (signal 6, SIGABRT)")
    assert onnx["parity"]["status"] == "not_executed" and onnx["path"] == "tiny.onnx"
    tfl = artifact(rep, "tflite", "fp32")
    assert tfl["error"] is None and tfl["parity"]["passed"], tfl["parity"]
    assert tfl["parity"]["outputs"]["output"]["rel_l2"] <= 1e-4


def test_memory_limit_is_named_when_a_stage_runs_out(tmp_path):
    """`--max-memory` too small for torch: the export stage fails with exit 3 and says it ran out
    of memory under the limit, not a bare ImportError."""
    model = tmp_path / "lin.py"
    model.write_text("import torch\n\ndef make():\n    return torch.nn.Linear(3, 2), torch.randn(1, 3)\n")
    r = bridge("convert", f"{model}:make", "--target", "onnx", "--max-memory", "300M", "--out", tmp_path / "out")
    assert r.returncode == 3, r.stderr[-3000:]
    error = report(tmp_path / "out")["artifacts"][0]["error"]
    assert error["stage"] == "export"
    assert error["message"].startswith("stage export ran out of memory (--max-memory 300 MiB)"), error
    r = bridge("convert", f"{model}:make", "--target", "onnx", "--max-memory", "8G", "--out", tmp_path / "ok")
    assert r.returncode == 0, r.stderr[-3000:]


# --- Re-runs into the same folder: report.json describes exactly what is there -----------------------

def test_rerun_never_mixes_runs(tmp_path):
    out = tmp_path / "out"
    source = tiny(tmp_path)
    r = bridge("convert", source, "--target", "onnx", "--target", "tflite", "--quantize", "tflite=fp32,fp16",
               "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    first = assert_folder_matches_report(out)
    assert listing(out) == ["report.html", "report.json", "tiny.onnx", "tiny_fp16.tflite", "tiny_fp32.tflite"]
    # The user's own files in the folder are not the gateway's to delete.
    (out / "notes.txt").write_text("mine\n")
    mine = (out / "tiny_fp16.tflite").read_bytes()  # a copy under another name: not listed, so kept
    (out / "mine.tflite").write_bytes(mine)

    # fp16 no longer asked for: its file goes with the old report.
    r = bridge("convert", source, "--target", "onnx", "--target", "tflite", "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "notes.txt").read_text() == "mine\n"
    assert (out / "mine.tflite").read_bytes() == mine
    (out / "notes.txt").unlink()
    (out / "mine.tflite").unlink()
    second = assert_folder_matches_report(out)
    assert listing(out) == ["report.html", "report.json", "tiny.onnx", "tiny_fp32.tflite"]
    assert [a["path"] for a in second["artifacts"]] == ["tiny.onnx", "tiny_fp32.tflite"]
    assert {a["path"]: a["sha256"] for a in second["artifacts"]} == \
        {a["path"]: a["sha256"] for a in first["artifacts"] if a["quantization"] == "fp32"}

    # The TFLite converter aborts: the previous output stays whole; the failed run's report (with
    # its error and no path) and files are beside it in .bridge-failed.
    r = faulty("convert", source, "--target", "onnx", "--target", "tflite", "--out", out,
               fault="tflite-convert:abort")
    assert r.returncode == 3, r.stderr[-3000:]
    assert "the previous output in" in r.stderr and ".bridge-failed" in r.stderr
    assert listing(out) == [".bridge-failed", "report.html", "report.json", "tiny.onnx", "tiny_fp32.tflite"]
    assert json.loads((out / "report.json").read_text()) == second
    third = assert_folder_matches_report(out)
    assert listing(out / ".bridge-failed") == ["report.html", "report.json", "tiny.onnx"]
    tfl = artifact(third, "tflite", "fp32")
    assert tfl["path"] is None and tfl["error"]["stage"] == "tflite-convert"
    assert tfl["error"]["message"].startswith("stage tflite-convert crashed (signal 6, SIGABRT)")
    assert artifact(third, "onnx", "fp32")["parity"]["passed"]

    # A good run afterwards clears the stale failure.
    r = bridge("convert", source, "--target", "onnx", "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert listing(out) == ["report.html", "report.json", "tiny.onnx"]


# --- Killed while placing: the previous artifact or nothing, never half of one -------------------------

def test_killed_while_placing_a_file_keeps_the_previous_one(tmp_path):
    out = tmp_path / "out"
    r = bridge("convert", tiny(tmp_path, seed=0), "--target", "onnx", "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    before = artifact(report(out), "onnx", "fp32")["sha256"]

    kill_at_hook("convert", tiny(tmp_path, seed=1), "--target", "onnx", "--out", out,
                 fault="place:hang")
    assert sha256(out / "tiny.onnx") == before
    # The old report went before anything was replaced; the killed run's work folder and its
    # publish journal (what it owned and brought in) are left, so the next run can still replace
    # tiny.onnx although no report lists it any more.
    left = listing(out)
    assert len(left) == 3 and left[0] == ".bridge-publish.json" and left[1].startswith(".bridge.work-")
    assert left[2] == "tiny.onnx"

    r = bridge("convert", tiny(tmp_path, seed=1), "--target", "onnx", "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = assert_folder_matches_report(out)  # the dead run's work folder is swept too
    assert listing(out) == ["report.html", "report.json", "tiny.onnx"]
    assert artifact(rep, "onnx", "fp32")["sha256"] != before


def test_killed_while_replacing_a_package_leaves_nothing_half_made(tmp_path):
    out = tmp_path / "out"
    r = bridge("convert", tiny(tmp_path, seed=0), "--target", "coreml", "--quantize", "coreml=fp32", "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    before = assert_folder_matches_report(out)["artifacts"][0]["sha256"]
    assert listing(out) == ["report.html", "report.json", "tiny_fp32.mlpackage"]

    # Killed between moving the old package aside and moving the new one in.
    kill_at_hook("convert", tiny(tmp_path, seed=1), "--target", "coreml", "--quantize", "coreml=fp32",
                 "--out", out, fault="place-swap:hang")
    assert not (out / "tiny_fp32.mlpackage").exists() and not (out / "report.json").exists()
    aside = [p for p in out.iterdir() if p.name.startswith(".tiny_fp32.mlpackage.old-")]
    assert len(aside) == 1 and sha256(aside[0]) == before  # the previous package, whole

    r = bridge("convert", tiny(tmp_path, seed=1), "--target", "onnx", "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_folder_matches_report(out)
    assert listing(out) == ["report.html", "report.json", "tiny.onnx"]  # debris of the killed run swept


# --- Deterministic artifacts ----------------------------------------------------------------------------

def test_same_source_same_options_same_bytes(tmp_path):
    # --no-cache: the second run must convert again, not copy the first run's files back
    args = ("convert", f"{SAMPLES}/shapes_cnn.py:load", "--target", "onnx", "--target", "tflite",
            "--target", "coreml", "--quantize", "coreml=fp16,palettize-4", "--no-cache")
    reports = []
    for name in ("a", "b"):
        r = bridge(*args, "--out", tmp_path / name)
        assert r.returncode == 0, r.stderr[-3000:]
        reports.append(assert_folder_matches_report(tmp_path / name))
    digests = [{(a["target"], a["quantization"]): a["sha256"] for a in rep["artifacts"]} for rep in reports]
    assert list(digests[0]) == [("onnx", "fp32"), ("tflite", "fp32"), ("coreml", "fp16"), ("coreml", "palettize-4")]
    assert digests[0] == digests[1]  # and each folder's files hash as its report says
    # Core ML item ids are name-based UUIDs of the package's content, not coremltools' random ones.
    manifest = json.loads((tmp_path / "a" / "shapes_cnn_fp16.mlpackage" / "Manifest.json").read_text())
    assert uuid.UUID(manifest["rootModelIdentifier"]).version == 5
    assert all(uuid.UUID(k).version == 5 for k in manifest["itemInfoEntries"])



def test_validate_reports_a_crashing_runtime_as_exit_3(tmp_path):
    """`bridge validate` judges a crash like `convert` does: that artifact failed (exit 3), it was
    not merely left unexecuted (exit 1)."""
    src = tiny(tmp_path)
    r = faulty("validate", src, src, "--report", tmp_path / "v.json", fault="onnx-runtime:segv")
    assert r.returncode == 3, r.stderr[-2000:]
    a = json.loads((tmp_path / "v.json").read_text())["artifacts"][0]
    assert a["error"]["stage"] == "onnx-runtime" and "crashed (signal 11, SIGSEGV)" in a["error"]["message"]
    assert a["parity"]["status"] == "not_executed" and not a["parity"]["passed"]


def test_a_full_disk_is_one_line_not_an_internal_error(tmp_path):
    """The JUnit file goes to a filesystem with no space left (a 16 KiB tmpfs, filled, in a mount
    namespace of the test's own): the gateway's write fails with ENOSPC. One line naming it, exit
    3, never "internal error ... please report it"; the conversion's own output is published."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    onnx.save(model, str(tmp_path / "relu.onnx"))
    full = tmp_path / "full"
    full.mkdir()
    mount = f"mount -t tmpfs -o size=16k tmpfs {full}"
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", mount], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("no tmpfs can be mounted in a mount namespace here")
    script = (f"{mount} && {{ cat /dev/zero > {full}/filler 2>/dev/null; true; }} && exec {BRIDGE} "
              f"convert {tmp_path / 'relu.onnx'} --target onnx --out {tmp_path / 'out'} --junit {full}/junit.xml")
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 3, r.stderr[-2000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith("bridge:")]
    assert len(errors) == 1 and "no space left on the device" in errors[0], r.stderr[-2000:]
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr
    assert (tmp_path / "out" / "report.json").is_file()


def test_bad_input_found_by_the_export_leaves_no_output_folder_behind(tmp_path):
    """An ONNX file is parsed and checked in the export stage (not before it): a damaged one is
    still a one-line exit 2, and the --out folder the run created for it goes again; one that
    existed before stays."""
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07" + b"not an ONNX model at all" * 4)
    existing = tmp_path / "mine"
    existing.mkdir()
    for out in (tmp_path / "new" / "out", existing):
        r = subprocess.run([str(BRIDGE), "convert", bad, "--target", "onnx", "--out", out], capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 2, r.stderr[-3000:]
        said = f"bridge: error: {bad}: a damaged or truncated ONNX file (DecodeError)"
        assert r.stderr.strip().splitlines() == [said]
    assert not (tmp_path / "new" / "out").exists()
    assert existing.is_dir() and listing(existing) == []
