"""Executors run real stage children: how many at once, within the memory they are said to need."""

from __future__ import annotations

import json
import time

from bridge.executors import GiB, Inline, Local, Needs
from bridge.stages import Limits, Stage

STAMP = Stage("stamp", "tests.bridge.stage_functions:stamp")


def _overlap(path) -> int:
    """The most stamps that were running at the same moment."""
    spans = [json.loads(line) for line in path.read_text().splitlines()]
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def test_local_runs_jobs_at_once(tmp_path):
    log = tmp_path / "log"
    ex = Local(jobs=3, memory=64 * GiB)
    futures = [ex.submit(STAMP, (str(log), 1.5), {}, Limits(), Needs(memory=GiB)) for _ in range(3)]
    assert all(f.result().result == str(log) for f in futures)
    assert _overlap(log) == 3


def test_local_never_starts_what_memory_cannot_hold(tmp_path):
    log = tmp_path / "log"
    ex = Local(jobs=3, memory=3 * GiB)
    futures = [ex.submit(STAMP, (str(log), 1.0), {}, Limits(), Needs(memory=2 * GiB)) for _ in range(3)]
    for f in futures:
        f.result()
    assert _overlap(log) == 1  # two would need 4 GiB of the 3


def test_a_stage_larger_than_the_budget_still_runs_alone(tmp_path):
    log = tmp_path / "log"
    start = time.monotonic()
    f = Local(jobs=2, memory=GiB).submit(STAMP, (str(log), 0.1), {}, Limits(), Needs(memory=8 * GiB))
    assert f.result(timeout=120).error is None and time.monotonic() - start < 120


def test_inline_returns_a_finished_outcome(tmp_path):
    f = Inline().submit(STAMP, (str(tmp_path / "log"), 0.0), {}, Limits(), Needs(memory=GiB))
    assert f.done() and f.result().result == str(tmp_path / "log")


ENVIRONMENT = Stage("environment", "tests.bridge.stage_functions:environment")


def test_a_stage_child_starts_without_the_gateways_modules(tmp_path):
    """A child is a fresh interpreter: neither the gateway's main module (the CLI, typer, rich) nor
    the orchestration comes along; `import bridge` there imports no numpy."""
    import subprocess
    import sys

    code = ("import bridge.cli, json, sys; from bridge.stages import run_stage, Stage; "
            "print(json.dumps(run_stage(Stage('environment', 'tests.bridge.stage_functions:environment'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    modules = set(json.loads(done.stdout)["modules"])
    assert "bridge.stages" in modules
    assert not modules & {"typer", "rich", "click", "numpy", "bridge.cli", "bridge.conversion"}, modules


def test_a_stage_beside_others_gets_the_cpus_it_asked_for_as_threads():
    local = Local(jobs=2, memory=64 * GiB).submit(ENVIRONMENT, (), {}, Limits(), Needs(memory=GiB)).result()
    assert local.result["omp"] == "1"
    torch = Local(jobs=2, memory=64 * GiB).submit(Stage("threads", "tests.bridge.stage_functions:torch_threads"),
                                                   (), {}, Limits(), Needs(memory=GiB)).result()
    assert torch.result == 1
    inline = Inline().submit(ENVIRONMENT, (), {}, Limits(), Needs(memory=GiB)).result()
    assert inline.result["omp"] is None  # one stage at a time: the frameworks' own default


def test_bound_caps_what_runs_at_once(tmp_path):
    log = tmp_path / "log"
    ex = Local(jobs=2, memory=64 * GiB)
    ex.bound(3 * GiB)
    futures = [ex.submit(STAMP, (str(log), 1.0), {}, Limits(), Needs(memory=2 * GiB)) for _ in range(2)]
    for f in futures:
        f.result()
    assert _overlap(log) == 1 and ex.memory == 3 * GiB


PID = Stage("pid", "tests.bridge.stage_functions:pid")


def _idle_spares(count: int = 1) -> list[int]:
    from bridge.stages import SPARES

    deadline = time.monotonic() + 60
    while len(SPARES.idle()) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return SPARES.idle()


def test_a_kept_spare_runs_the_next_stage_and_close_ends_the_idle_one():
    """A started child waits for the next stage (no interpreter start on the run's critical path);
    the one refilled after it outlives the executor thread whose stage took the first (a child's
    death signal follows the thread that started it), runs the stage after, and `close` ends it."""
    import os

    ex = Local(jobs=2, memory=64 * GiB)
    try:
        ex.spares(Limits())
        [first] = _idle_spares()
        assert ex.submit(PID, (), {}, Limits(), Needs(memory=GiB)).result(timeout=120).result == first
        [second] = _idle_spares()
        time.sleep(0.5)  # the executor's thread that ran the first stage has ended by now
        assert second != first and ex.submit(PID, (), {}, Limits(), Needs(memory=GiB)).result(timeout=120).result \
            == second
        [third] = _idle_spares()
    finally:
        ex.close()
    from bridge.stages import SPARES

    assert SPARES.idle() == []
    time.sleep(0.2)
    for pid in (first, second, third):
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"


def test_a_prestarted_child_loads_its_stage_frameworks_before_the_job_and_only_that_stage_takes_it():
    """`prestart` with a preload (the export's frameworks, guessed from SOURCE before the CLI has
    parsed it): the child has them imported when its stage, submitted with the same preload,
    arrives. A stage that asks for another preload never gets that child, and the child is ended
    at that first take (the export came from the cache): it must not sit idle holding torch."""
    import os

    from bridge.executors import prestart
    from bridge.stages import SPARES

    wanted = ("colorsys", "wave")  # stdlib modules no stage child imports on its own
    ex = Local(jobs=2, memory=64 * GiB)
    try:
        prestart(verbose=False, preload=wanted)
        [child] = _idle_spares()
        prestart(verbose=False)  # the command's own call finds it waiting
        assert SPARES.idle() == [child]
        got = ex.submit(ENVIRONMENT, (), {}, Limits(), Needs(memory=GiB, preload=wanted)).result(timeout=120)
        assert set(wanted) <= set(got.result["modules"])
        assert SPARES.idle() == []

        prestart(verbose=False, preload=wanted)
        [speculative] = _idle_spares()
        other = ex.submit(ENVIRONMENT, (), {}, Limits(), Needs(memory=GiB)).result(timeout=120)
        assert not set(wanted) & set(other.result["modules"])
        time.sleep(0.2)
        assert speculative not in SPARES.idle()
        assert not os.path.exists(f"/proc/{speculative}") or open(f"/proc/{speculative}/stat").read().split()[2] == "Z"

        ex.spares(Limits())  # `bridge batch` keeps plain spares: a stage that wants a preload takes one
        [plain] = _idle_spares()
        assert ex.submit(PID, (), {}, Limits(), Needs(memory=GiB, preload=wanted)).result(timeout=120).result == plain
    finally:
        ex.close()


def test_an_expected_child_waits_for_its_stage_through_other_takes_and_forget_ends_it():
    """`expect` starts the child of a stage that will come (a lane's conversion, importing its
    converter while the export runs): other stages' takes neither take it nor end it (unlike a
    guessed preload), the stage that asks for its preload runs in it with the modules imported,
    nothing refills it, and `forget` ends one no stage took."""
    import os

    from bridge.stages import SPARES

    wanted = ("colorsys", "wave")
    ex = Local(jobs=2, memory=64 * GiB)
    try:
        ex.expect(Limits(), Needs(memory=GiB, preload=wanted))
        [child] = _idle_spares()
        other = ex.submit(ENVIRONMENT, (), {}, Limits(), Needs(memory=GiB)).result(timeout=120)
        assert not set(wanted) & set(other.result["modules"]) and SPARES.idle() == [child]
        got = ex.submit(PID, (), {}, Limits(), Needs(memory=GiB, preload=wanted)).result(timeout=120)
        assert got.result == child
        time.sleep(0.3)
        assert SPARES.idle() == []  # not refilled

        ex.expect(Limits(), Needs(memory=GiB, preload=wanted))
        ex.expect(Limits(), Needs(memory=GiB, preload=("colorsys",)))
        unused, other = _idle_spares(2)
        ex.forget(Limits(), Needs(memory=0, preload=wanted))  # that stage's children only
        assert SPARES.idle() == [other]
        time.sleep(0.2)
        assert not os.path.exists(f"/proc/{unused}") or open(f"/proc/{unused}/stat").read().split()[2] == "Z"
    finally:
        ex.close()


def test_export_modules_guess_from_the_argument_only(tmp_path):
    import os

    from bridge.base.sources import ONNX_EXPORT, TORCH_EXPORT, export_modules

    (tmp_path / "tm.py").write_text("import os\nfrom torch import nn\n\ndef load():\n    return nn.Linear(2, 2)\n")
    (tmp_path / "km.py").write_text("import torch\nimport keras\n")
    (tmp_path / "plain.py").write_text("x = 'import torch'\n")
    assert export_modules(str(tmp_path / "tm.py") + ":load") == TORCH_EXPORT
    assert export_modules(str(tmp_path / "km.py") + ":load") == ()  # Keras too: no guess
    assert export_modules(str(tmp_path / "plain.py") + ":load") == ()  # text in a string is no import
    assert export_modules(str(tmp_path / "missing.py") + ":load") == ()
    os.mkfifo(tmp_path / "pipe.py")  # opening it would wait for a writer forever
    assert export_modules(str(tmp_path / "pipe.py") + ":load") == ()
    assert export_modules("model.onnx") == ONNX_EXPORT and export_modules("m.PT2") == TORCH_EXPORT
    assert export_modules("model.keras") == export_modules("pkg.module:make") == export_modules("tflite") == ()


def test_what_a_stage_leaves_in_its_temporary_folder_goes_with_its_child():
    import os

    from bridge.stages import run_stage

    left = run_stage(Stage("leave", "tests.bridge.stage_functions:leave_temporary"))
    assert left["folder"].startswith(left["tmpdir"] + os.sep)
    assert not os.path.exists(left["folder"]) and not os.path.exists(left["tmpdir"])
