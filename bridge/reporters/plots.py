"""The report page's figures, drawn with matplotlib as inline SVG: text stays text (searchable,
selectable), nothing is fetched, and a figure weighs tens of KB where plotly's inlined library alone
is ~3.5 MB. matplotlib is imported here only, when a page is rendered.

Each figure is split in two: what it plots, taken from the report document as plain data, and the
drawing of that data. A figure is a pure function of its data, of this code and of matplotlib's
version (the drawing starts from matplotlib's own defaults, never a user's matplotlibrc), so a
store (`Figures`, the stage cache's) may hand back the SVG drawn for the same data before: a re-run
whose numbers did not change neither draws nor imports matplotlib.

`overview` and `histogram` take the report document and return one `<svg>` element as a string.
"""

from __future__ import annotations

import io
import math
import re
import threading
from collections.abc import Callable
from typing import Any, Protocol

SNR_SHOWN_DB = 160.0  # bars stop here: past ~140 dB two float32 results agree to the last bit anyway
COLORS = {"passed": "#2e7d32", "failed": "#c62828", "error": "#6d4c41", "not_executed": "#9e9e9e"}
# One colour per artifact in the histograms; no green or red, which mean passed and failed on the page.
LINES = ("#1f77b4", "#ff7f0e", "#9467bd", "#17becf", "#8c564b", "#e377c2", "#bcbd22", "#7f7f7f")


class Figures(Protocol):
    """Where drawn figures are kept: `svg` returns the SVG drawn for `data` under `name` before,
    or calls `draw`, keeps its result and returns it."""

    def svg(self, name: str, data: Any, draw: Callable[[], str]) -> str: ...


def _figure(figures: Figures | None, name: str, data: Any, draw: Callable[[Any, str], str]) -> str:
    return draw(data, name) if figures is None else figures.svg(name, data, lambda: draw(data, name))


def verdict(a: dict) -> str:
    if a.get("error"):
        return "error"
    return (a.get("parity") or {}).get("status") or "not_executed"


def label(a: dict) -> str:
    return a.get("path") or f"{a['target']} {a['quantization']}"


def required_snr(thresholds: dict) -> float | None:
    """A threshold on the SNR axis: snr_db_min itself, or rel_l2_max as the SNR it implies
    (SNR = -20 log10 rel_l2, the same ratio of norms)."""
    found = []
    if thresholds.get("snr_db_min") is not None:
        found.append(thresholds["snr_db_min"])
    if thresholds.get("rel_l2_max"):
        found.append(-20 * math.log10(thresholds["rel_l2_max"]))
    return max(found) if found else None


def worst_output(a: dict) -> tuple[str, dict] | None:
    """The output with the lowest SNR (NaN/Inf count as the worst)."""
    outputs = ((a.get("parity") or {}).get("outputs") or {}).items()
    return min(outputs, key=lambda kv: -math.inf if kv[1].get("snr_db") is None else kv[1]["snr_db"], default=None)


def overview(doc: dict, figures: Figures | None = None) -> str:
    """One bar per artifact: SNR of its worst output against the source, coloured by verdict, with
    the SNR its thresholds demand marked; an artifact that never ran gets its verdict as text."""
    return _figure(figures, "overview", overview_data(doc), _draw_overview)


def overview_data(doc: dict) -> list[dict]:
    """What the overview plots, one row per artifact: its label, verdict, worst output and SNR,
    and the SNR its thresholds demand."""
    rows = []
    for a in doc["artifacts"]:
        worst, state = worst_output(a), verdict(a)
        snr = worst[1].get("snr_db") if worst else None
        need = required_snr((a["parity"].get("thresholds") or {}).get(worst[0], {})) if snr is not None else None
        rows.append({"label": label(a), "state": state, "output": worst[0] if worst else None, "snr": snr,
                     "need": need})
    return rows


def _draw_overview(rows: list[dict], name: str) -> str:
    with _style(name):
        from matplotlib.figure import Figure

        fig = Figure(figsize=(10, 0.4 * len(rows) + 1.3))
        ax = fig.add_subplot()
        ys = range(len(rows))[::-1]
        for y, row in zip(ys, rows, strict=True):
            snr, state = row["snr"], row["state"]
            if snr is None:
                text = {"error": "could not be converted or run", "not_executed": "parity not executed"}.get(
                    state, "NaN/Inf in the output")
                ax.text(1, y, text, va="center", color=COLORS[state])
                continue
            ax.barh(y, max(min(snr, SNR_SHOWN_DB), 0.5), color=COLORS[state], height=0.6)
            shown = "exact" if snr >= 300 else f"{snr:.1f} dB"
            ax.text(min(max(snr, 0), SNR_SHOWN_DB) + 1.5, y, f"{shown}  ({row['output']})", va="center", fontsize=8)
            if row["need"] is not None:
                ax.plot([row["need"], row["need"]], [y - 0.4, y + 0.4], color="black", linewidth=2)
        ax.set_yticks(list(ys), [row["label"] for row in rows])
        ax.set_xlim(0, SNR_SHOWN_DB + 45)
        ax.set_xlabel("SNR against the source, worst output (dB; higher is closer; black tick: required)")
        ax.spines[["top", "right"]].set_visible(False)
        fig.tight_layout()
        return _svg(fig, name)


def histogram(doc: dict, output: str, index: int, figures: Figures | None = None) -> str | None:
    """|artifact - source| of one output for every artifact that ran, as the share of elements per
    quarter decade; exact matches are counted in the legend (log 0 has no place on the axis)."""
    lines = histogram_data(doc, output)
    return _figure(figures, f"histogram-{index}", lines, _draw_histogram) if lines else None


def histogram_data(doc: dict, output: str) -> list[dict]:
    """One line per artifact that has a histogram of `output`: its label, colour and bins."""
    lines = []
    for i, a in enumerate(doc["artifacts"]):
        m = ((a.get("parity") or {}).get("outputs") or {}).get(output) or {}
        h = m.get("abs_error_histogram")
        if h:
            lines.append({"label": label(a), "color": LINES[i % len(LINES)], "histogram": h,
                          "total": h["exact"] + sum(n for _, n in h["bins"])})
    return lines


def _draw_histogram(lines: list[dict], name: str) -> str:
    with _style(name):
        from matplotlib.figure import Figure

        fig = Figure(figsize=(10, 3.2))
        ax = fig.add_subplot()
        for line in lines:
            h, total, color = line["histogram"], line["total"], line["color"]
            width = h["log10_bin_width"]
            exact = f", {100 * h['exact'] / total:.0f}% exact" if h["exact"] else ""
            if h["bins"]:
                edges = [lo for lo, _ in h["bins"]]
                xs, ys = [], []
                for lo, n in h["bins"]:
                    xs += [lo, lo + width]
                    ys += [100 * n / total] * 2
                ax.plot([edges[0], *xs, xs[-1]], [0, *ys, 0], color=color, linewidth=1.5,
                        label=f"{line['label']}{exact}")
            else:
                ax.plot([], [], color=color, label=f"{line['label']} (all exact)")
        ax.set_xlabel("|artifact − source| per element")
        ax.set_ylabel("% of elements")
        ax.set_ylim(bottom=0)
        ax.xaxis.set_major_formatter(lambda x, _: f"1e{x:g}")
        ax.spines[["top", "right"]].set_visible(False)
        ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.tight_layout()
        return _svg(fig, name)


class _style:
    """matplotlib settings for one figure: its defaults (a user's matplotlibrc would make the same
    data draw differently), text as SVG text, ids salted per figure so several SVGs in one page
    never share an id, no timestamp (the same report gives the same figure)."""

    def __init__(self, salt: str):
        self.rc = {"svg.fonttype": "none", "svg.hashsalt": f"bridge-{salt}", "font.size": 9,
                   "font.family": "sans-serif", "axes.titlesize": 10}

    def __enter__(self):
        import matplotlib

        _DRAWING.acquire()  # rcParams are process-wide: `bridge batch` renders its models' pages from threads
        self.ctx = matplotlib.rc_context()
        self.ctx.__enter__()
        matplotlib.rcdefaults()
        matplotlib.rcParams.update(self.rc)

    def __exit__(self, *exc):
        try:
            self.ctx.__exit__(*exc)
        finally:
            _DRAWING.release()


_DRAWING = threading.Lock()


def preload() -> None:
    """Import matplotlib in a background thread: 1-5 s on a loaded machine, which `bridge convert`
    spends while its stage children work instead of after the last one (the page is drawn then)."""
    threading.Thread(target=_import, name="bridge-matplotlib", daemon=True).start()


def _import() -> None:
    try:
        import matplotlib.backends.backend_svg  # noqa: F401 - savefig(format="svg") loads it
        import matplotlib.figure  # noqa: F401
    except ImportError:  # the page then says so when it is drawn
        pass


def _svg(fig, name: str) -> str:
    """The figure as an `<svg>` element for an HTML page. matplotlib names its groups `figure_1`,
    `axes_1`... in every figure: each id (and each reference to one) gets the figure's name, so
    several figures in one page never share an id."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]  # no XML prolog or DOCTYPE inside HTML
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)  # RDF boilerplate
    text = re.sub(r'\bid="([^"]+)"', rf'id="{name}-\1"', text)
    text = re.sub(r'\bhref="#([^"]+)"', rf'href="#{name}-\1"', text)
    return re.sub(r"url\(#([^)]+)\)", rf"url(#{name}-\1)", text)
