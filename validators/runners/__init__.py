"""One runner per runtime, all with the same two calls:

    runner = SomeRunner(); runner.load(path)
    outputs = runner.infer({"input": array})   # -> {"output": array}

Runners take and return tensors in the artifact's own names and layout; `run_samples` maps from
and to the source's names and layout with the artifact's `IO` bindings.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from bridge.base.arrays import Feed, Feeds, FeedWriter
from bridge.base.bindings import IO


class Runner(Protocol):
    runtime: str

    def load(self, path: str) -> None: ...

    def infer(self, feed: Feed) -> Feed: ...


def load_runner(path: str) -> Runner:
    module, cls = path.split(":")
    return getattr(importlib.import_module(module), cls)()


def run_samples(runner_path: str, artifact: str, feeds: Sequence[Feed], io: IO | None,
                out_dir: str) -> tuple[str, Feeds]:
    """Run every feed through an artifact; returns the runtime's name and its outputs by source
    name, written to `out_dir` one sample at a time (`bridge.base.arrays`).

    Meant to run inside a child process (`bridge.stages.run_stage`).
    """
    runner = load_runner(runner_path)
    runner.load(artifact)
    writer = FeedWriter(out_dir)
    for feed in feeds:
        if io is None:
            writer.append(runner.infer(feed))
            continue
        art_feed = {b.artifact_name: b.to_artifact(np.asarray(feed[b.name])) for b in io.inputs}
        out = runner.infer(art_feed)
        writer.append({b.name: b.to_source(np.asarray(out[b.artifact_name])) for b in io.outputs})
    return runner.runtime, writer.close()
