"""`bridge batch MATRIX.toml [--executor local|ray] [--jobs N]`"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from bridge.base.errors import UsageError
from bridge.commands.common import command_line, console, open_cache, say, stdout
from bridge.commands.parsing import memory as parse_memory
from bridge.progress import BatchProgress, Progress


class ExecutorKind(StrEnum):
    local = "local"
    ray = "ray"


def command(
    ctx: typer.Context,
    matrix: Annotated[Path, typer.Argument(help=escape("The matrix file (TOML): [defaults] and one [[model]] table "
                                                       "per model, with `bridge convert`'s options as keys."))],
    out: Annotated[Path, typer.Option(help="Folder of the model folders (<out>/<name>/) and summary.json.")]
    = Path("bridge-out"),
    executor: Annotated[ExecutorKind, typer.Option(help="local: stages on this machine; ray: Ray tasks.")]
    = ExecutorKind.local,
    jobs: Annotated[int, typer.Option(min=1, help="Stages at once (local), or the CPUs of a local Ray instance "
                                                  "(default: this machine's CPUs).")] = None,
    memory: Annotated[str, typer.Option(help="Memory the local executor fills with stages, e.g. 16G (default: "
                                             "what is available at start).")] = None,
    ray_address: Annotated[str, typer.Option(help="Join this Ray cluster (e.g. auto, ray://head:10001) instead "
                                                  "of starting a local instance.")] = None,
    cache_dir: Annotated[Path, typer.Option(help="Stage cache folder (default ~/.cache/bridge/stages).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Run every stage; read and write no cache.")] = False,
    cache_size: Annotated[str, typer.Option(help="Bound of the stage cache, e.g. 20G.")] = None,
) -> None:
    """Convert every model of MATRIX, each into OUT/<name>/ as `bridge convert` would, with one summary."""
    from bridge.batch import plan_models, read_matrix, run_batch
    from bridge.executors import Local, Ray

    if ray_address and executor is not ExecutorKind.ray:
        raise UsageError("--ray-address needs --executor ray")
    if memory and executor is not ExecutorKind.local:
        raise UsageError("--memory is for --executor local (Ray schedules by each node's memory)")
    models = read_matrix(matrix, out)
    plans = plan_models(models)
    cache = open_cache(cache_dir, no_cache, cache_size)
    jobs = jobs or os.cpu_count() or 1
    runner = Local(jobs, parse_memory(memory, "--memory")) if executor is ExecutorKind.local else \
        Ray(ray_address, jobs)
    board = Board([m.name for m in models])
    try:
        with board.shown():
            summary = run_batch(matrix, models, plans, out, executor=runner, cache=cache, progress=board,
                                command_line=command_line(ctx))
    finally:
        runner.close()
    print_summary(summary)
    raise typer.Exit(summary.exit_code)


class Board(BatchProgress):
    """One line per model: what it is doing and for how long. Live on a terminal; in a log, a line
    as each step ends and as each model ends."""

    def __init__(self, names: list[str]):
        self.names = names
        self.lock = threading.Lock()
        self.state = {n: {"start": None, "steps": {}, "done": None} for n in names}
        self.live = console.is_terminal

    @contextlib.contextmanager
    def shown(self) -> Iterator[None]:
        if not self.live:
            yield
            return
        with Live(self, console=console, refresh_per_second=4, transient=True):
            yield

    def __rich__(self) -> Group:
        now = time.perf_counter()
        lines = []
        with self.lock:
            for name in self.names:
                s = self.state[name]
                if s["done"] is not None:
                    code = s["done"].exit_code
                    lines.append(Text.assemble((f"{name}: ", "bold"), ("done" if code == 0 else f"exit {code}",
                                                                       "green" if code == 0 else "red")))
                elif s["start"] is None:
                    lines.append(Text.assemble((f"{name}: ", "bold"), ("queued", "dim")))
                else:
                    doing = ", ".join(f"{t} {now - t0:.0f} s" for t, t0 in s["steps"].items()) or "..."
                    lines.append(Text.assemble((f"{name}: ", "bold"), doing, (f"  ({now - s['start']:.0f} s)", "dim")))
        return Group(*lines)

    def model(self, name: str) -> Progress:
        return _ModelProgress(self, name)

    def started(self, name: str) -> None:
        with self.lock:
            self.state[name]["start"] = time.perf_counter()

    def finished(self, name: str, result) -> None:
        with self.lock:
            self.state[name]["done"] = result
        if not self.live:
            verdict = "passed" if result.exit_code == 0 else f"exit {result.exit_code}"
            say((f"{name}: ", "bold"), verdict, (f" ({result.seconds:.1f} s)", "dim"))

    def begin(self, name: str, text: str) -> None:
        with self.lock:
            self.state[name]["steps"][text] = time.perf_counter()

    def end(self, name: str, text: str, note: str | None = None, *, failed: bool = False) -> None:
        with self.lock:
            t0 = self.state[name]["steps"].pop(text, None)
        if not self.live:
            took = note or (f"{time.perf_counter() - t0:.1f} s" if t0 is not None else "")
            mark = ("✗ ", "red") if failed else ("✓ ", "green")
            say((f"{name}: ", "bold"), mark, text, (f" ({took})", "dim"))


class _ModelProgress(Progress):
    def __init__(self, board: Board, name: str):
        self.board, self.name = board, name

    @contextlib.contextmanager
    def step(self, text: str) -> Iterator[None]:
        self.board.begin(self.name, text)
        try:
            yield
        except BaseException:
            self.board.end(self.name, text, failed=True)
            raise
        self.board.end(self.name, text)

    def reused(self, text: str) -> None:
        self.board.end(self.name, text, note="cached")


def print_summary(summary) -> None:
    table = Table(title=f"bridge batch: {len(summary.models)} models", show_lines=False)
    for col in ("model", "status", "artifacts", "passed", "stages run", "reused", "seconds", "report"):
        table.add_column(col, justify="right" if col in ("artifacts", "passed", "stages run", "reused", "seconds")
                         else "left")
    doc = summary.to_json()
    for m in doc["models"]:
        status = Text("passed", "green") if m["exit_code"] == 0 else Text(
            {1: "FAILED (parity)", 2: "ERROR (input)", 3: "ERROR (conversion)"}.get(m["exit_code"], "ERROR"), "red")
        arts = m["artifacts"]
        table.add_row(Text(m["name"]), status, str(len(arts)), str(sum(a["exit_code"] == 0 for a in arts)),
                      str(m["stages"]["ran"]), str(m["stages"]["reused"]), f"{m['seconds']:.1f}",
                      Text(m["report"] or "-"))
    stdout.print(table)
    for m in doc["models"]:
        if m["error"]:
            say(("error: ", "red"), f"{m['name']}: {m['error']}")
        for a in m["artifacts"]:
            if a["exit_code"] != 0:
                say((f"{m['name']}: ", "red"), f"{a['target']}/{a['quantization']}: {a['status']}")
    say(f"summary: {summary.path} (and summary.html, junit.xml beside it)")
    counts = doc["counts"]
    verdict = ("every model passed", "green") if summary.exit_code == 0 else \
        (f"{counts['failed']} of {counts['models']} models failed", "red")
    say(verdict, f" (exit {summary.exit_code}, {summary.seconds:.1f} s)")
    stdout.file.flush()
