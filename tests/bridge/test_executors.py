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
