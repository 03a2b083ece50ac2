"""Baseline today's bridge on the zoo: one `bridge convert` per model and variant, in a subprocess.

    python benchmarks/zoo/run.py [--cache ~/.cache/bridge-zoo] [--out /tmp/zoo-runs]
                                 [--json benchmarks/zoo/baseline-3.11.json] [--only NAME ...]
                                 [--variant synthetic|realistic ...] [--resume] [--timeout 1800]
    python benchmarks/zoo/run.py --table [--json ...]     # print the markdown table

Variants:
- `realistic`: models with calibration data (the trained ones) get `--calibration`, so parity runs
  on held-out realistic samples, and the image models add `int8` to both lanes.
- `synthetic`: every model, fp32 and fp16, bridge's own seeded inputs (what a user without data
  sees). For a trained model, the pair of variants tells input-domain failures from real ones.
- `static`: the ONNX models whose dims `--input` fixes, converted from their static twin
  (`build.py`: the dims written into the graph and its shape subgraphs folded by onnxslim), with
  the realistic variant's data and modes when the model has data. Where the original fails and
  the twin passes, dynamic dims were the cause.

Each run goes through the installed `bridge` console script under `/usr/bin/time -v` (peak RSS
of the largest process), writes its output to `--out/<model>/<variant>`, and its result is saved
to `--json` as soon as it ends, so an interrupted baseline keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DEFAULT_CACHE = Path(os.environ.get("BRIDGE_ZOO_CACHE", "~/.cache/bridge-zoo")).expanduser()


def command(model: dict, variant: str, cache: Path, out: Path, timeout: float,
            targets: tuple[str, ...] = ("onnx", "tflite", "coreml")) -> list[str]:
    path, _, fn = (model["static"] if variant == "static" else model)["source"].partition(":")
    # `file.py:callable` entrypoints sit in the repository, model files in the cache
    src = str((cache if model["root"] == "cache" else REPO) / path) + (f":{fn}" if fn else "")
    real = variant == "realistic" or (variant == "static" and model.get("calibration"))
    modes = "fp32,fp16,int8" if real and model.get("int8") else "fp32,fp16"
    cmd = ["bridge", "convert", src, *(a for t in targets for a in ("--target", t))]
    cmd += [a for t in targets if t != "onnx" for a in ("--quantize", f"{t}={modes}")]
    for flag in model.get("inputs", []) if variant != "static" else []:
        cmd += ["--input", flag]
    if real:
        cmd += ["--calibration", str(cache / model["calibration"]["path"])]
    return cmd + ["--out", str(out), "--timeout", str(timeout)]


def variants(model: dict, wanted: list[str]) -> list[str]:
    return [v for v in wanted if v == "synthetic" or (v == "realistic" and model.get("calibration"))
            or (v == "static" and model.get("static"))]


def summarize(report: dict) -> list[dict]:
    """One row per artifact: status, the worst output's metrics, the error or parity reason."""
    rows = []
    for a in report.get("artifacts", []):
        parity = a.get("parity") or {}
        outs = parity.get("outputs") or {}
        row = {"target": a["target"], "mode": a["quantization"], "status": parity.get("status"),
               "bytes": a.get("bytes"), "seconds": a.get("seconds")}
        if outs:
            row["rel_l2"] = max(o["rel_l2"] for o in outs.values())
            row["snr_db"] = min(o["snr_db"] for o in outs.values())
            row["cosine"] = min(o["cosine"] for o in outs.values())
            row["nonfinite"] = sum(o["nonfinite"]["nan"] + o["nonfinite"]["inf"] for o in outs.values())
            onnx_stage = (parity.get("stages") or {}).get("onnx->target")
            if onnx_stage:
                row["onnx_to_target_snr_db"] = min(o["snr_db"] for o in onnx_stage.values())
        if a.get("error"):
            e = a["error"]
            row["error"] = {"stage": e.get("stage"), "node": e.get("node"), "op_type": e.get("op_type"),
                            "message": (e.get("message") or "").strip()}
            row["status"] = "error"
        elif parity.get("reason"):
            row["reason"] = parity["reason"]
        if a.get("flex_ops"):
            row["flex_ops"] = a["flex_ops"]
        rows.append(row)
    return rows


def run_one(model: dict, variant: str, cache: Path, out_root: Path, timeout: float,
            targets: tuple[str, ...] = ("onnx", "tflite", "coreml")) -> dict:
    out = out_root / model["name"] / variant
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    cmd = command(model, variant, cache, out, timeout, targets)
    env = {**os.environ, **{k: v.replace("{cache}", str(cache)) for k, v in model.get("env", {}).items()}}
    t0 = time.monotonic()
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.monotonic() - t0
    (out / "stdout.txt").write_text(proc.stdout)
    (out / "stderr.txt").write_text(proc.stderr)
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    result = {"model": model["name"], "variant": variant, "kind": model["kind"], "format": model["format"],
              "command": " ".join(["bridge", *cmd[1:]]), "exit_code": proc.returncode, "wall_s": round(wall, 1),
              "peak_rss_mb": round(int(peak.group(1)) / 1024) if peak else None}
    # a run that failed leaves its report in .bridge-failed/ (the previous output stays untouched)
    report = next((p for p in (out / "report.json", out / ".bridge-failed" / "report.json") if p.is_file()),
                  out / "report.json")
    if report.is_file():
        r = json.loads(report.read_text())
        result["artifacts"] = summarize(r)
        result["warnings"] = r.get("warnings", [])
    else:
        lines = [ln for ln in proc.stderr.splitlines()
                 if ln.strip() and not ln.startswith(("\t", "Command being timed")) and ":" in ln
                 and not re.match(r"\s*(User|System|Percent|Elapsed|Average|Maximum|Major|Minor|Voluntary|"
                                  r"Involuntary|Swaps|File system|Socket|Signals|Page size|Exit status)", ln)]
        result["error"] = lines[-1].strip() if lines else f"exit {proc.returncode}, no report"
    return result


def load(path: Path) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    return {"schema": "bridge.zoo-baseline/1", "results": []}


def environment() -> dict:
    from importlib.metadata import version

    pkgs = ["bridge-convert", "torch", "onnx", "onnxruntime", "onnx2tf", "tensorflow", "coremltools", "keras",
            "tf2onnx", "transformers", "ai-edge-litert"]
    return {"python": platform.python_version(), "machine": platform.machine(), "cores": os.cpu_count(),
            "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                  cwd=REPO).stdout.strip(),
            "versions": {p: version(p) for p in pkgs}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--out", type=Path, default=Path("/tmp/bridge-zoo-runs"))
    ap.add_argument("--json", type=Path, default=HERE / f"baseline-{platform.python_version_tuple()[0]}."
                                                        f"{platform.python_version_tuple()[1]}.json")
    ap.add_argument("--only", action="append")
    ap.add_argument("--variant", action="append", choices=["realistic", "synthetic", "static"])
    ap.add_argument("--resume", action="store_true", help="skip model/variant pairs already in --json")
    ap.add_argument("--timeout", type=float, default=1800.0, help="bridge's per-stage --timeout")
    ap.add_argument("--table", action="store_true", help="print the markdown table of --json and exit")
    ap.add_argument("--models", action="store_true", help="print the markdown list of the zoo's models and exit")
    ap.add_argument("--target", action="append", choices=["onnx", "tflite", "coreml"],
                    help="the targets to convert to (repeatable; default: all three)")
    args = ap.parse_args()
    targets = tuple(args.target or ("onnx", "tflite", "coreml"))
    cache = args.cache.expanduser().resolve()
    if args.table:
        from table import markdown

        print(markdown(load(args.json)))
        return
    if args.models:
        from table import models_markdown

        print(models_markdown(json.loads((cache / "manifest.json").read_text())))
        return
    models = json.loads((cache / "manifest.json").read_text())["models"]
    if args.only:
        models = [m for m in models if m["name"] in args.only]
    wanted = args.variant or ["realistic", "synthetic", "static"]
    # Realistic runs first (trained models, the most telling), then every model on synthetic inputs.
    queue = [(m, v) for v in wanted for m in models if v in variants(m, wanted)]
    baseline = load(args.json)
    baseline["environment"] = environment()
    done = {(r["model"], r["variant"]) for r in baseline["results"]}
    for model, variant in queue:
        if args.resume and (model["name"], variant) in done:
            continue
        print(f"{model['name']} [{variant}] ...", end=" ", flush=True)
        result = run_one(model, variant, cache, args.out, args.timeout, targets)
        baseline["results"] = [r for r in baseline["results"]
                               if (r["model"], r["variant"]) != (model["name"], variant)] + [result]
        args.json.write_text(json.dumps(baseline, indent=1) + "\n")
        arts = result.get("artifacts", [])
        print(f"exit {result['exit_code']} in {result['wall_s']} s, "
              f"{sum(a['status'] == 'passed' for a in arts)}/{len(arts)} passed", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
