"""One runner per runtime, all with the same two calls:

    runner = SomeRunner(); runner.load(path)
    outputs = runner.infer({"input": array})   # -> {"output": array}

Runners take and return tensors in the artifact's own names and layout; `run_samples` maps from
and to the source's names and layout with the artifact's `IO` bindings.
"""

from __future__ import annotations

import importlib
from typing import Protocol

import numpy as np

from bridge.converters.base import IO, Feed


class Runner(Protocol):
    runtime: str

    def load(self, path: str) -> None: ...

    def infer(self, feed: Feed) -> Feed: ...


def load_runner(path: str) -> Runner:
    module, cls = path.split(":")
    return getattr(importlib.import_module(module), cls)()


def run_samples(runner_path: str, artifact: str, feeds: list[Feed], io: IO | None) -> tuple[str, list[Feed]]:
    """Run every feed through an artifact; returns the runtime's name and outputs by source name.

    Meant to run inside a child process (`bridge.isolation.run_stage`).
    """
    runner = load_runner(runner_path)
    runner.load(artifact)
    results = []
    for feed in feeds:
        if io is None:
            results.append(runner.infer(feed))
            continue
        art_feed = {b.artifact_name: b.to_artifact(feed[b.name]) for b in io.inputs}
        out = runner.infer(art_feed)
        results.append({b.name: b.to_source(np.asarray(out[b.artifact_name])) for b in io.outputs})
    return runner.runtime, results
