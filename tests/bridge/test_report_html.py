"""report.html from real runs of the orchestrator (the fake lane, tests/bridge/fake_lane.py, makes
right and wrong artifacts on purpose; onnxruntime computes the figures). What a browser makes of
the page is tested in tests/e2e/test_reports.py with headless Chromium; these check the markup."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bridge import ConvertOptions, convert
from bridge.base.errors import UsageError
from bridge.cache import StageCache
from bridge.lanes import registered
from bridge.reporters.html import is_page, render
from bridge.reporters.json import read
from tests.bridge import fake_lane
from tests.pages import Page, external_references

pytest.importorskip("onnxruntime")

DATA = Path(__file__).parent / "data"
HOSTILE = '</svg><script>fetch("https://evil.example/x")</script><img src="http://evil.example/y.png">'


def tiny(folder: Path, output: str = "y") -> str:
    return fake_lane.tiny_onnx(folder, output=output)


@pytest.fixture(autouse=True)
def fake():
    with registered(fake_lane.LANE):
        yield


def test_the_page_names_every_artifact_with_its_verdict_and_plots(tmp_path):
    report = convert(tiny(tmp_path / "src"), ConvertOptions(targets=("onnx", "fake"),
                                                            quantize=("fake=exact,wrong",), out=str(tmp_path / "o")))
    page_path = tmp_path / "o" / ".bridge-failed" / "report.html"
    assert report.written["page"] == page_path and report.path == page_path.with_name("report.json")
    html = page_path.read_text()
    page = Page(html)
    text = " ".join(page.text)
    for name in ("tiny.onnx", "tiny_exact.fake", "tiny_wrong.fake"):
        assert name in text
    assert "FAILED · exit 1" in text and "3 artifacts: 2 passed, 1 failed parity" in text
    assert "y: rel_l2 0.5 > 0.0001 (error introduced at onnx->target)" in text
    figures = [a.get("id") for tag, a in page.tags if tag == "figure"]
    assert figures == ["plot-overview", "plot-histogram-1"]
    assert sum(tag == "svg" for tag, _ in page.tags) == 2
    assert html.count("<path") > 20  # bars, ticks, histogram steps
    assert len(page.ids()) == len(set(page.ids())), "two SVGs share an id"
    assert external_references(html) == []
    assert ("meta", {"http-equiv": "Content-Security-Policy",
                     "content": "default-src 'none'; style-src 'unsafe-inline'"}) in page.tags
    assert not any(tag == "script" for tag, _ in page.tags)
    assert is_page(page_path) and len(html.encode()) < 150_000


def test_names_from_the_model_are_text_never_markup(tmp_path):
    source = tiny(tmp_path / "src", output=HOSTILE)
    report = convert(source, ConvertOptions(targets=("onnx", "fake"), quantize=("fake=wrong",),
                                            out=str(tmp_path / "o")))
    html = report.written["page"].read_text()
    page = Page(html)
    assert not any(tag in ("script", "img") for tag, _ in page.tags)
    assert external_references(html) == []
    assert HOSTILE in " ".join(page.text)  # shown as typed, in the tables and in the figures' text


def test_a_version_1_report_renders():
    doc = read(DATA / "report-v1-convert.json")
    html = render(doc).decode()
    text = " ".join(Page(html).text)
    for a in doc["artifacts"]:
        assert a["path"] in text
    assert "read from a bridge.report/1 report" in text and "not recorded" in text
    assert external_references(html) == []


def test_a_users_own_report_files_in_out_are_never_replaced(tmp_path):
    source = tiny(tmp_path / "src")
    for name, content in (("report.html", "<p>my notes</p>"), ("report.json", '{"mine": true}')):
        out = tmp_path / f"o-{name}"
        out.mkdir()
        (out / name).write_text(content)
        with pytest.raises(UsageError, match=f"{name} exists and is not a bridge"):
            convert(source, ConvertOptions(targets=("onnx",), out=str(out)))
        assert (out / name).read_text() == content
    out = tmp_path / "o"
    convert(source, ConvertOptions(targets=("onnx",), out=str(out)))
    convert(source, ConvertOptions(targets=("onnx",), out=str(out)))  # its own page and report: replaced
    assert is_page(out / "report.html")


def _svgs(page: bytes) -> list[str]:
    return re.findall(r"<svg.*?</svg>", page.decode(), flags=re.S)


def test_kept_figures_give_the_page_drawn_afresh_and_never_outlive_their_data(tmp_path):
    """The stage cache keeps the page's figures by what they plot: a page rendered from kept
    figures is byte-identical to one drawn afresh, rendering it imports no matplotlib, and a
    figure whose numbers changed, or whose file was damaged, is drawn again."""
    report = convert(tiny(tmp_path / "src"), ConvertOptions(targets=("onnx", "fake"), quantize=("fake=exact,wrong",),
                                                            out=str(tmp_path / "o")))
    doc = report.to_json()
    drawn = render(doc)
    figures = StageCache(tmp_path / "cache").pages
    assert render(doc, figures) == drawn  # drawn, then kept
    kept = sorted((tmp_path / "cache" / "figures").glob("*/*.json"))
    assert len(kept) == 2  # the overview and one histogram
    (tmp_path / "doc.json").write_text(json.dumps(doc))
    code = ("import json, sys; from bridge.cache import StageCache; from bridge.reporters.html import render;"
            f"page = render(json.loads(open({str(tmp_path / 'doc.json')!r}).read()), "
            f"StageCache({str(tmp_path / 'cache')!r}).pages);"
            "sys.stdout.buffer.write(page); sys.stderr.write(str('matplotlib' in sys.modules))")
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    assert fresh.stdout == drawn and fresh.stderr.decode().endswith("False")

    changed = copy.deepcopy(doc)
    changed["artifacts"][2]["parity"]["outputs"]["y"]["snr_db"] -= 3.0
    assert _svgs(render(changed, figures))[0] != _svgs(drawn)[0]  # the overview's bar moved
    assert render(changed, figures) == render(changed)

    for path in kept:  # damaged on disk: drawn again, never served
        entry = json.loads(path.read_text())
        path.write_text(json.dumps({**entry, "svg": entry["svg"].replace("<path", "<path data-x='1'", 1)}))
    assert render(doc, figures) == drawn
