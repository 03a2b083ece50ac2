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
    source = doc["source"]["path"]
    model = doc["source"]["name"]
    cases = [_case(a, model) for a in doc["artifacts"]]
    counts = {kind: sum(1 for c in cases if c.find(kind) is not None) for kind in ("failure", "error")}
    total = sum(float(c.get("time")) for c in cases)
    attrs = {"tests": str(len(cases)), "failures": str(counts["failure"]), "errors": str(counts["error"]),
             "time": f"{total:.3f}"}
    root = ET.Element("testsuites", {"name": SUITES_NAME, **attrs})
    suite = ET.SubElement(root, "testsuite", {"name": _text(f"bridge {doc['command']} {source}"), **attrs,
                                              "skipped": "0", **({"timestamp": doc["created"].rstrip("Z")}
                                                                 if doc.get("created") else {})})
    props = ET.SubElement(suite, "properties")
    for name, value in (("bridge_version", doc.get("bridge_version")),
                        ("command_line", shlex.join(doc["command_line"]) if doc.get("command_line") else None),
                        ("exit_code", doc.get("exit_code"))):
        if value is not None:
            ET.SubElement(props, "property", {"name": name, "value": _text(str(value))})
    suite.extend(cases)
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
