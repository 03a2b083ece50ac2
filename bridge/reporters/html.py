"""report.html: one self-contained page for a person (a release manager, a reviewer), rendered from
the report document with a jinja2 template and matplotlib SVG figures.

Self-contained means it opens from a USB stick on a plane: no script, no stylesheet, font or image
fetched from anywhere, and a Content-Security-Policy (`default-src 'none'`) that tells the browser
to refuse any request even if a model's tensor names tried to smuggle one in (they are escaped
anyway). jinja2 and matplotlib load only when a page is rendered, never for `bridge --help`.
"""

from __future__ import annotations

import functools
import json
import shlex
import threading
from pathlib import Path
from typing import Protocol

from bridge.base.files import write_atomic
from bridge.reporters import plots

TEMPLATE = "report.html.j2"
GENERATOR = "bridge report.html"  # <meta name="generator">: how a later run knows the page is its own
MAX_HISTOGRAMS = 12  # outputs plotted; a model with more lists them all in the table
MAX_LAYERS = 40  # localised layers shown per artifact, around the first divergent one
ORIGINS = {"synthetic": "synthetic inputs", "calibration": "held-out calibration data", "user": "the user's data"}
_CORE_FIELDS = {"target", "quantization", "path", "bytes", "bytes_per_param", "sha256", "route", "seconds", "io",
                "error", "parity", "warnings"}


class PageCache(plots.Figures, Protocol):
    """Figures kept by what they plot (`plots.Figures`), and a folder for compiled templates."""

    templates: Path


class HtmlReporter:
    def write(self, doc: dict, path: Path) -> None:
        write_atomic(path, render(doc))


@functools.cache
def _environment(compiled: str | None = None):
    """One per process: compiling the templates took 0.4 s of every page (a batch writes one per
    model); with `compiled` (a folder), they are compiled once per template source, not once per
    process. Lenient about missing fields: a report upgraded from version 1 lacks some, and the
    page must still open."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("bridge.reporters", "templates"), autoescape=True,
                             undefined=jinja2.ChainableUndefined, trim_blocks=True, lstrip_blocks=True,
                             bytecode_cache=jinja2.FileSystemBytecodeCache(compiled) if compiled else None)
    env.filters.update(num=_num, size=_size)
    return env


def preload(pages: PageCache | None = None) -> None:
    """Compile the page's template in a background thread (0.1-0.4 s when no compiled copy is
    cached), which `bridge convert` spends while its stage children work rather than after them."""
    compiled = str(pages.templates) if pages is not None else None
    threading.Thread(target=lambda: _environment(compiled).get_template(TEMPLATE), name="bridge-template",
                     daemon=True).start()


def render(doc: dict, pages: PageCache | None = None) -> bytes:
    """The page; `pages` may hand back figures drawn for the same data before (`plots`) and the
    template compiled before."""
    from markupsafe import Markup

    env = _environment(str(pages.templates) if pages is not None else None)
    outputs = list(dict.fromkeys(n for a in doc["artifacts"] for n in ((a.get("parity") or {}).get("outputs") or {})))
    histograms = []
    for i, name in enumerate(outputs[:MAX_HISTOGRAMS]):
        svg = plots.histogram(doc, name, i, pages)
        if svg:
            histograms.append((name, Markup(svg)))
    page = env.get_template(TEMPLATE).render(
        doc=doc, generator=GENERATOR, summary=_summary(doc), rows=[_row(a) for a in doc["artifacts"]],
        command_line=shlex.join(doc["command_line"]) if doc.get("command_line") else None,
        overview=Markup(plots.overview(doc, pages)) if doc["artifacts"] else None, histograms=histograms,
        unplotted=outputs[MAX_HISTOGRAMS:], options=json.dumps(doc["environment"].get("options"), indent=2),
        origins=ORIGINS,
    )
    return page.encode()


BATCH_GENERATOR = "bridge summary.html"


def render_batch(summary: dict, docs: dict[str, dict | None], pages: PageCache | None = None) -> bytes:
    """`bridge batch`'s summary.html: the models in a table, then a section per model with its
    artifacts' verdicts as its own page words them (`_row`), linking to that page. With `pages`,
    its template compiled before (as `render`'s)."""
    import os

    env = _environment(str(pages.templates) if pages is not None else None)
    models = []
    for m in summary["models"]:
        doc = docs.get(m["name"])
        state = "passed" if m["exit_code"] == 0 else "failed" if m["exit_code"] == 1 else "error"
        word = {0: "passed", 1: "parity failed", 2: "unusable input", 3: "conversion failed"}.get(m["exit_code"],
                                                                                              "error")
        page = os.path.join(os.path.dirname(m["report"]), "report.html") if m.get("report") else None
        models.append({"doc": m, "state": state, "word": word, "page": page,
                       "passed": sum(a["exit_code"] == 0 for a in m["artifacts"]),
                       "rows": [_row(a) for a in doc["artifacts"]] if doc else []})
    executor = ", ".join(f"{k} {_size(v) if k == 'memory' else v}" for k, v in summary["executor"].items()
                         if k != "executor")
    executor = f"{summary['executor']['executor']} ({executor})" if executor else summary["executor"]["executor"]
    return env.get_template("summary.html.j2").render(
        doc=summary, models=models, generator=BATCH_GENERATOR, executor=executor,
        verdict="PASSED" if summary["passed"] else "FAILED").encode()


def is_batch_page(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            head = f.read(2048)
    except OSError:
        return False
    return f'<meta name="generator" content="{BATCH_GENERATOR}">'.encode() in head


def _summary(doc: dict) -> dict:
    states = [plots.verdict(a) for a in doc["artifacts"]]
    counts = {s: states.count(s) for s in ("passed", "failed", "error", "not_executed") if states.count(s)}
    words = {"passed": "passed", "failed": "failed parity", "error": "could not be converted or run",
             "not_executed": "not checked"}
    return {"verdict": "PASSED" if doc.get("passed") else "FAILED", "counts": counts,
            "text": ", ".join(f"{n} {words[s]}" for s, n in counts.items()), "total": len(states)}


def _row(a: dict) -> dict:
    """One artifact as the page shows it."""
    parity = a.get("parity") or {}
    worst = plots.worst_output(a)
    error = a.get("error")
    problem = None
    if error:
        where = f" at {error['op_type']} node {error['node']}" if error.get("node") else ""
        problem = f"stage {error['stage']}{where}: {error['message']}"
    elif parity.get("status") != "passed":
        problem = parity.get("reason") or "parity was not executed"
    outputs = []
    for name, m in (parity.get("outputs") or {}).items():
        stage = ((parity.get("stages") or {}).get("onnx->target") or {}).get(name) or {}
        limits = (parity.get("thresholds") or {}).get(name) or {}
        outputs.append({"name": name, "m": m, "limits": limits, "stage": stage,
                        "nonfinite": _nonfinite(m)})
    loc = parity.get("localization") or {}
    return {"a": a, "label": plots.label(a), "state": plots.verdict(a), "problem": problem, "parity": parity,
            "worst": worst, "outputs": outputs, "loc": loc, "loc_layers": _layers_shown(loc),
            "details": {k: v for k, v in a.items() if k not in _CORE_FIELDS}}


def _layers_shown(loc: dict) -> list[dict]:
    """The layers around the first divergent one (the report lists them all)."""
    layers = loc.get("layers") or []
    first = (loc.get("first_divergent") or {}).get("tensor")
    at = next((i for i, layer in enumerate(layers) if layer.get("tensor") == first), 0)
    start = max(0, min(at - MAX_LAYERS // 4, len(layers) - MAX_LAYERS))
    return layers[start:start + MAX_LAYERS]


def _nonfinite(m: dict) -> str:
    def text(c):
        c = c or {}
        return " ".join(f"{c[k]} {word}" for k, word in (("nan", "NaN"), ("inf", "Inf")) if c.get(k))
    mine, theirs = text(m.get("nonfinite")), text(m.get("reference_nonfinite"))
    return f"{mine or '0'} (source {theirs})" if theirs else mine


def _num(x, spec: str = ".4g") -> str:
    return "–" if x is None else format(x, spec)


def _size(n) -> str:
    if n is None:
        return "–"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} B"


def is_page(path: Path) -> bool:
    """A page this bridge wrote: one a later run may replace. Only the head is read."""
    try:
        with path.open("rb") as f:
            head = f.read(2048)
    except OSError:
        return False
    return f'<meta name="generator" content="{GENERATOR}">'.encode() in head
