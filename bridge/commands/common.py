"""What the commands share: the rich progress spinner and the parity table."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from bridge.base.errors import UsageError
from bridge.commands.parsing import memory
from bridge.progress import Progress
from bridge.publish import FAILED
from bridge.report import Report

# Piped output (CI logs) gets wide lines instead of rich's 80-column default.
console = Console(stderr=True) if Console(stderr=True).is_terminal else Console(stderr=True, width=200)
stdout = Console() if Console().is_terminal else Console(width=160)


class RichProgress(Progress):
    """A spinner with elapsed time on long steps (stderr, so stdout stays the table)."""

    @contextlib.contextmanager
    def step(self, text: str) -> Iterator[None]:
        start = time.perf_counter()
        if console.is_terminal:
            with console.status(Text(f"{text}...")):
                yield
        else:
            yield
        say(("✓ ", "green"), text, (f" ({time.perf_counter() - start:.1f} s)", "dim"))

    def note(self, text: str) -> None:
        say(text)

    def reused(self, text: str) -> None:
        say(("✓ ", "green"), text, (" (cached)", "dim"))


def say(*parts: str | tuple[str, str], out: Console | None = None) -> None:
    """Print on stderr. Text from users and libraries (paths, output names, onnxruntime's errors)
    is never read as rich markup: `[/x]` in a path must print as itself, not crash the console."""
    (out or console).print(Text.assemble(*parts), highlight=False, soft_wrap=True)


def _fmt(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def _nonfinite(m: dict) -> str:
    """'32 Inf', '48 NaN (source 48 NaN)': where NaN/Inf came from, per output."""
    def text(counts: dict | None) -> str:
        counts = counts or {}
        return " ".join(f"{counts[k]} {label}" for k, label in (("nan", "NaN"), ("inf", "Inf")) if counts.get(k))

    mine, source = text(m.get("nonfinite")), text(m.get("reference_nonfinite"))
    if source:
        return f"{mine or '0'} (source {source})"
    return mine


def parity_table(report: Report) -> Table:
    table = Table(title="Parity against the source", show_lines=False)
    rows = [(a, list(a.parity.outputs.items()) if a.parity is not None and a.parity.outputs else [("-", {})])
            for a in report.artifacts]
    # The NaN/Inf column appears only when some output has any, to keep the usual table narrow.
    nonfinite = any(_nonfinite(m) for _, outputs in rows for _, m in outputs)
    numeric = ("max_abs", "rel_l2", "cosine", "snr_db", "nan/inf", "bytes")
    for col in ("artifact", "mode", "status", "output", *numeric):
        if col != "nan/inf" or nonfinite:
            table.add_column(col, justify="right" if col in numeric else "left")
    for a, outputs in rows:
        p = a.parity
        status = {"passed": Text("passed", "green"), "failed": Text("FAILED", "red")}.get(
            p.status if p is not None else "", Text("not run", "yellow"))
        if a.error:
            status = Text("ERROR", "red")
        for i, (name, m) in enumerate(outputs):
            cells = [(a.path or a.target) if i == 0 else "", a.quantization if i == 0 else "",
                     status if i == 0 else "", name, _fmt(m.get("max_abs"), ".3g"), _fmt(m.get("rel_l2"), ".2e"),
                     _fmt(m.get("cosine"), ".6f"), _fmt(m.get("snr_db"), ".1f")]
            if nonfinite:
                cells.append(Text(_nonfinite(m), "red"))
            cells.append(_fmt(a.bytes, ",") if i == 0 else "")
            table.add_row(*(c if isinstance(c, Text) else Text(str(c)) for c in cells))
    return table


def print_outcome(report: Report) -> None:
    stdout.print(parity_table(report))
    for w in report.warnings:
        say(("warning: ", "yellow"), w)
    for a in report.artifacts:
        for w in a.warnings:
            say(("warning: ", "yellow"), f"{a.path or a.target}: {w}")
        if "kept_layers" in a.details:  # mixed modes: the layers left in higher precision
            kept = ", ".join(a.details["kept_layers"]) or "none"
            say(f"{a.target}/{a.quantization}: {len(a.details['kept_layers'])} layer(s) kept in "
                f"{a.details.get('kept_precision', 'higher precision')}: {kept}", out=stdout)
        if a.error:
            where = f" at {a.error.op_type} node {a.error.node}" if a.error.node else ""
            stage = f"stage {a.error.stage}{where}: "
            message = a.error.message if a.error.message.startswith(stage.rstrip(": ")) else stage + a.error.message
            say(("error: ", "red"), f"{a.target}/{a.quantization}: {message}")
        elif a.parity is not None and not a.parity.passed:
            say((f"parity {a.parity.status}: ", "red"), f"{a.path}: {a.parity.reason}")
    for kind in ("report", "page", "junit"):
        if kind in report.written:
            say(f"{kind}: {report.written[kind]}")
    if report.path:
        if report.path.parent.name == FAILED:
            say(("kept: ", "yellow"), f"the previous output in {report.path.parent.parent} is untouched; this "
                f"run's files are in {report.path.parent}")
    verdict = {0: ("all artifacts passed parity", "green"), 1: ("parity failed or did not run", "red"),
               3: ("a conversion failed", "red")}[report.exit_code]
    say(verdict, f" (exit {report.exit_code})")
    sys.stdout.flush()


def command_line(ctx: typer.Context) -> list[str] | None:
    """The argv the console script ran with (`bridge.cli.main` hands it down), for the report."""
    obj = ctx.find_root().obj
    return obj.get("command_line") if isinstance(obj, dict) else None


def open_cache(cache_dir: Path | None, no_cache: bool, cache_size: str | None):
    """The stage cache the options ask for (`bridge.cache`), or None with `--no-cache`."""
    from bridge.cache import DEFAULT_MAX_BYTES, StageCache, default_dir

    bound = memory(cache_size, "--cache-size") if cache_size else DEFAULT_MAX_BYTES
    if bound < 1 << 20:
        raise UsageError(f"--cache-size {cache_size}: expected at least 1M")
    if no_cache:
        return None
    if cache_dir:
        return StageCache(Path(cache_dir), bound)
    try:
        return StageCache(default_dir(), bound)
    except UsageError as e:  # the default folder is a convenience: without it, every stage runs
        say(("warning: ", "yellow"), f"running without the stage cache: {e}")
        return None
