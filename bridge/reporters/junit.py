"""JUnit XML, so CI (GitHub Actions, GitLab, Jenkins) shows a failed model next to failed tests.

One `<testcase>` per artifact: classname `<model>.<target>`, name `<mode> <file>`, time = its
conversion plus its parity run. A `<failure>` when parity failed, an `<error>` when the artifact
could not be converted or run (report.json's `error`, or parity `not_executed`), nothing when it
passed. It is written from the report document (`Report.to_json`), like every other format.

Written with the standard library's ElementTree: the format is four elements, and junit-xml (the
usual helper) has had no release since 2020; a dependency would buy nothing here.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from xml.etree import ElementTree as ET

from bridge.base.files import write_atomic

SUITES_NAME = "bridge"  # the root's name: how `--junit` recognizes a file an earlier run wrote
# XML 1.0 cannot hold most control characters, even escaped; error messages may carry them.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


class JUnitReporter:
    def write(self, doc: dict, path: Path) -> None:
        write_atomic(path, render(doc))


def render(doc: dict) -> bytes:
    return _document([suite(doc)])


def render_batch(summary: dict, docs: dict[str, dict | None]) -> bytes:
    """`bridge batch`: one `<testsuite>` per model (its report's, as `render` makes it); a model
    that stopped before it had a report is a suite of one errored case."""
    suites = []
    for model in summary["models"]:
        doc = docs.get(model["name"])
        if doc is not None:
            suites.append(suite(doc, name=model["name"]))
            continue
        case = ET.Element("testcase", {"classname": _text(model["name"]), "name": _text(model["source"]),
                                       "time": f"{model['seconds']:.3f}"})
        message = model.get("error") or "the model did not run"
        ET.SubElement(case, "error", {"message": _text(message), "type": "batch"}).text = _text(message)
        attrs = {"tests": "1", "failures": "0", "errors": "1", "time": f"{model['seconds']:.3f}", "skipped": "0"}
        empty = ET.Element("testsuite", {"name": _text(f"bridge batch {model['name']}"), **attrs})
        empty.append(case)
        suites.append(empty)
    return _document(suites)


def suite(doc: dict, name: str | None = None) -> ET.Element:
    """One run's `<testsuite>`: a case per artifact."""
    source = doc["source"]["path"]
    model = name or doc["source"]["name"]
    cases = [_case(a, model) for a in doc["artifacts"]]
    attrs = _counts(cases)
    title = f"bridge {doc['command']} {source}" if name is None else f"bridge batch {name} ({source})"
    element = ET.Element("testsuite", {"name": _text(title), **attrs, "skipped": "0",
                                       **({"timestamp": doc["created"].rstrip("Z")} if doc.get("created") else {})})
    props = ET.SubElement(element, "properties")
    for key, value in (("bridge_version", doc.get("bridge_version")),
                       ("command_line", shlex.join(doc["command_line"]) if doc.get("command_line") else None),
                       ("exit_code", doc.get("exit_code"))):
        if value is not None:
            ET.SubElement(props, "property", {"name": key, "value": _text(str(value))})
    element.extend(cases)
    return element


def _counts(cases) -> dict[str, str]:
    counts = {kind: sum(1 for c in cases if c.find(kind) is not None) for kind in ("failure", "error")}
    total = sum(float(c.get("time")) for c in cases)
    return {"tests": str(len(cases)), "failures": str(counts["failure"]), "errors": str(counts["error"]),
            "time": f"{total:.3f}"}


def _document(suites: list[ET.Element]) -> bytes:
    cases = [c for s in suites for c in s.iter("testcase")]
    root = ET.Element("testsuites", {"name": SUITES_NAME, **_counts(cases)})
    root.extend(suites)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def _case(a: dict, model: str) -> ET.Element:
    parity = a.get("parity") or {}
    seconds = (a.get("seconds") or 0.0) + (parity.get("seconds") or 0.0)
    case = ET.Element("testcase", {"classname": _text(f"{model}.{a['target']}"),
                                   "name": _text(f"{a['quantization']} {a.get('path') or '(not written)'}"),
                                   "time": f"{seconds:.3f}"})
    error = a.get("error")
    if error:
        where = f" at {error['op_type']} node {error['node']}" if error.get("node") else ""
        message = f"stage {error['stage']}{where}: {error['message']}"
        ET.SubElement(case, "error", {"message": _text(message), "type": error["stage"]}).text = _text(message)
    elif parity.get("status") == "failed":
        ET.SubElement(case, "failure", {"message": _text(parity["reason"]), "type": "parity"}).text = \
            _text(_metrics_text(parity))
    elif parity.get("status") != "passed":
        reason = parity.get("reason") or "parity was not executed"
        ET.SubElement(case, "error", {"message": _text(reason), "type": "not_executed"}).text = _text(reason)
    return case


def _metrics_text(parity: dict) -> str:
    """The figures behind the failure, one line per output, for the CI log."""
    lines = [parity["reason"], ""]
    for name, m in (parity.get("outputs") or {}).items():
        figures = ", ".join(f"{k} {m[k]}" for k in ("max_abs", "rel_l2", "cosine", "snr_db") if m.get(k) is not None)
        limits = ", ".join(f"{k} {v}" for k, v in (parity.get("thresholds") or {}).get(name, {}).items())
        lines.append(f"{name}: {figures} (thresholds: {limits or 'none'})")
    return "\n".join(lines)


def _text(s: str) -> str:
    return _NOT_XML.sub("\ufffd", s)


def is_junit(path: Path) -> bool:
    """A JUnit file this bridge wrote (its root is `<testsuites name="bridge">`): one `--junit` may
    replace. Only the head is read, never parsed as XML (a user's file could be anything)."""
    try:
        with path.open("rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return re.search(rb'^(<\?xml[^>]*\?>\s*)?<testsuites name="bridge"[ >]', head) is not None
