"""The baseline as a markdown table (model x artifact), with a first-pass cause class per failure.

Cause classes (the README's diagnoses refine them by hand):
  (a) dynamic/shape subgraph not folded  (b) Flex op Erf (GELU)  (c) parity inputs unlike the model's
  (d) fp16 precision  (e) op unsupported  (f) other
"""

from __future__ import annotations

import re

COLUMNS = [("onnx", "fp32"), ("tflite", "fp32"), ("tflite", "fp16"), ("tflite", "int8"),
           ("coreml", "fp32"), ("coreml", "fp16"), ("coreml", "int8")]

RULES = [  # (cause, regex on the error message / parity reason / flex ops)
    ("a", r"Dimension -1|must be >= 0|Reshape|dynamic|shape .*unknown|symbolic|non-constant shape|"
          r"could not be (folded|inferred)|static shape|Shape|turned output .* into \[None"),
    ("b", r"\bErf\b|Flex"),
    ("e", r"unsupported|not supported|not implemented|no converter|no Core ML converter|lacks|unknown op"),
]


# Checked by hand where the rules above guess wrong: (model, variant, target, mode) -> class.
HAND = {
    # TFLite passes the same static graph fed real token ids and an all-ones mask (5.3e-7, 67.6 dB):
    # bridge's 0-9 integer feeds for an ONNX source give mask values 2-9 and fully masked rows.
    ("gpt2-tiny-onnx", "static", "tflite", "fp32"): "c",
    ("gpt2-tiny-onnx", "static", "tflite", "fp16"): "c",
}


def cause(row: dict, variant: str, twins: dict[str, dict], model: str = "") -> str:
    """First-pass class of one failing artifact, from its error text and the same artifact in the
    model's other variants (`twins`: variant -> row)."""
    if variant == "synthetic" and row["status"] == "failed" and twins.get("realistic", {}).get("status") == "passed":
        return "c"  # the same artifact passes on realistic inputs
    if (model, variant, row["target"], row["mode"]) in HAND:
        return HAND[(model, variant, row["target"], row["mode"])]
    text = _text(row)
    static = twins.get("static") if variant != "static" else None
    if static and not re.search(dict(RULES)["e"], text) and (
            static["status"] == "passed" or (row["status"] == "error" and _text(static) != text)):
        return "a"  # the static twin of the same graph passes, or fails later for another reason
    for label, pattern in RULES:
        if re.search(pattern, text):
            return label
    if row["status"] == "failed" and row["mode"] == "fp16":
        return "d"
    return "f"


def _text(row: dict) -> str:
    return " ".join(filter(None, [(row.get("error") or {}).get("message"), row.get("reason"),
                                  " ".join(row.get("flex_ops") or [])]))


def cell(row: dict | None) -> str:
    if row is None:
        return ""
    status = row["status"]
    if status == "passed":
        return f"pass {_metric(row)}"
    if status == "failed":
        return f"**fail** {_metric(row)}" + (f" nan/inf {row['nonfinite']}" if row.get("nonfinite") else "")
    if status == "error":
        e = row["error"]
        return f"**error** {e['stage']}: {_short(e['message'])}"
    return f"**{status}** {_short(row.get('reason', ''))}"


def _metric(row: dict) -> str:
    if row["mode"] == "fp32":
        return f"{row['rel_l2']:.1e}"
    return f"{row['snr_db']:.1f} dB"


def _short(text: str, limit: int = 70) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    line = line.replace("|", "/")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def markdown(baseline: dict) -> str:
    results = baseline["results"]
    by_key = {(r["model"], r["variant"]): r for r in results}
    head = "| model | variant | exit | s | peak MB | " + " | ".join(f"{t} {m}" for t, m in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (5 + len(COLUMNS))]
    for r in results:
        rows = {(a["target"], a["mode"]): a for a in r.get("artifacts", [])}
        cells = [cell(rows.get(c)) for c in COLUMNS] if rows else [_short(r.get("error", ""))] + [""] * (
            len(COLUMNS) - 1)
        lines.append(f"| {r['model']} | {r['variant']} | {r['exit_code']} | {r['wall_s']:.0f} | "
                     f"{r.get('peak_rss_mb') or ''} | " + " | ".join(cells) + " |")
    lines += ["", "First-pass cause of each failing artifact:", ""]
    for r in results:
        others = {v: {(a["target"], a["mode"]): a for a in by_key[(r["model"], v)].get("artifacts", [])}
                  for v in ("realistic", "synthetic", "static") if (r["model"], v) in by_key}
        for a in r.get("artifacts", []):
            if a["status"] != "passed":
                twins = {v: rows[(a["target"], a["mode"])] for v, rows in others.items()
                         if (a["target"], a["mode"]) in rows}
                label = cause(a, r["variant"], twins, r["model"])
                lines.append(f"- ({label}) {r['model']} [{r['variant']}] {a['target']} {a['mode']}: "
                             f"{_short((a.get('error') or {}).get('message') or a.get('reason', ''), 140)}")
        if not r.get("artifacts"):
            lines.append(f"- (f) {r['model']} [{r['variant']}]: {_short(r.get('error', ''), 140)}")
    return "\n".join(lines)


def models_markdown(manifest: dict) -> str:
    """The zoo's model list: name, kind, format, task, size, where it comes from."""
    lines = ["| model | kind | format | task | bytes | --input | provenance |", "|---|---|---|---|---|---|---|"]
    for m in manifest["models"]:
        p = m.get("provenance", {})
        where = (f"`{p['wheel']}=={p['version']}` `{p['member'].split('/')[-1]}` ({p['license']})" if "wheel" in p
                 else p.get("exported_by") or p.get("built_by", ""))
        size = f"{m['bytes']:,}" if m.get("bytes") else "(entrypoint)"
        flags = " ".join(f"`{f}`" for f in m.get("inputs", [])) or "-"
        lines.append(f"| {m['name']} | {m['kind']} | {m['format']} | {m['task']} | {size} | {flags} | {where} |")
    return "\n".join(lines)
