"""What the commands share: the rich progress spinner and the parity table."""

from __future__ import annotations

import contextlib
import sys
import threading
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
    """A spinner with elapsed time on long steps (stderr, so stdout stays the table). Steps may
    run side by side (a lane converts while the hub runs): one spinner names them all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: list[str] = []
        self._status = None

    @contextlib.contextmanager
    def step(self, text: str) -> Iterator[None]:
        start = time.perf_counter()
        self._show(text, +1)
        try:
            yield
        finally:
            self._show(text, -1)
        say(("✓ ", "green"), text, (f" ({time.perf_counter() - start:.1f} s)", "dim"))

    def _show(self, text: str, change: int) -> None:
        if not console.is_terminal:
            return
        with self._lock:
            if change > 0:
                self._running.append(text)
            else:
                self._running.remove(text)
            if self._running and self._status is None:
                self._status = console.status("")
                self._status.start()
            if self._status is not None:
                if self._running:
                    self._status.update(Text(" · ".join(self._running) + "..."))
                else:
                    self._status.stop()
                    self._status = None

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


SHOWN_LAYERS = 20  # kept layers named on the console; the report names every one


def print_outcome(report: Report) -> None:
    stdout.print(parity_table(report))
    for w in report.warnings:
        say(("warning: ", "yellow"), w)
    for a in report.artifacts:
        for w in a.warnings:
            say(("warning: ", "yellow"), f"{a.path or a.target}: {w}")
        if "kept_layers" in a.details:  # mixed modes: the layers left in higher precision
            layers = a.details["kept_layers"]
            kept = ", ".join(layers[:SHOWN_LAYERS]) or "none"
            if len(layers) > SHOWN_LAYERS:  # a transformer keeps hundreds: the report lists them all
                where = report.path or "report.json"
                kept += f" and {len(layers) - SHOWN_LAYERS} more (every one: {where}, kept_layers)"
            say(f"{a.target}/{a.quantization}: {len(layers)} layer(s) kept in "
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


def print_layers(report: Report, limit: int) -> None:
    """`bridge debug`: each localised artifact's layers, then its first divergent layer."""
    from bridge.localization import alone, describe, summary

    for a in report.artifacts:
        loc = a.parity.localization if a.parity is not None else None
        if not loc:
            continue
        if loc.get("status") not in ("localized", "no_divergence"):
            say(("localisation: ", "yellow"), f"{a.path}: {loc.get('status')}: {loc.get('reason', '')}")
            continue
        first = (loc.get("first_divergent") or {}).get("tensor")
        worst = ((loc.get("isolated") or {}).get("worst") or {}).get("tensor")
        table = Table(title=f"Layers of {a.path} against the hub ({loc['samples']} samples)")
        numeric = ("rel_l2", "snr_db", "jump_db", "alone dB", "→ outputs dB")
        for col in ("", "layer", "op", "fused", "artifact op", "by", *numeric):
            table.add_column(col, justify="right" if col in numeric else "left")
        shown = _window(loc["layers"], first, limit)
        for layer in shown:
            mark = ">" if layer["tensor"] == first else "*" if layer["tensor"] == worst else ""
            style = "red" if not layer["passed"] else ""
            table.add_row(Text(mark, "red"), Text(layer["node"], style), Text(layer["op_type"] or ""),
                          Text(str(len(layer["nodes"])) if len(layer["nodes"]) > 1 else ""),
                          Text(layer["artifact_op"] or ""), Text(layer["matched_by"]),
                          Text(_fmt(layer.get("rel_l2"), ".2e")), Text(_fmt(layer.get("snr_db"), ".1f")),
                          Text(_fmt(layer.get("jump_db"), ".1f")),
                          Text(_fmt((layer.get("isolated") or {}).get("snr_db"), ".1f")),
                          Text(_fmt((layer.get("isolated") or {}).get("output_snr_db"), ".1f")))
        stdout.print(table)
        if len(shown) < len(loc["layers"]):
            say(f"({len(shown)} of {len(loc['layers'])} layers shown; the report lists them all)")
        if loc.get("first_divergent"):
            say(("first divergent layer (>): ", "red"), describe(loc["first_divergent"]))
        else:
            say(summary(loc))
        if worst and worst != first:
            say(("worst on its own (*): ", "yellow"), alone(loc["isolated"]["worst"]))
        if (loc.get("isolated") or {}).get("error"):
            say(("isolated profile not run: ", "yellow"), loc["isolated"]["error"])
        say(f"{loc['runtime_note']}; {loc['seconds']:.1f} s")


def _window(layers: list[dict], first: str | None, limit: int) -> list[dict]:
    """At most `limit` layers: those around the first divergent one (a quarter of them before it)."""
    at = next((i for i, layer in enumerate(layers) if layer["tensor"] == first), 0)
    start = max(0, min(at - limit // 4, len(layers) - limit))
    return layers[start:start + limit]


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
