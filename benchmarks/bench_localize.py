"""What per-layer localisation adds to a run whose artifact fails parity, through the installed
console script:

    python benchmarks/bench_localize.py [--repeat N] [--json PATH] [--zoo DIR] [--workdir DIR]

For each model, an int8 TFLite conversion judged with a strict `--threshold int8@snr_db_min=60`
(so the int8 file fails parity, as a badly quantized one would, and is localised):

  convert        `bridge convert ... --target tflite --quantize tflite=int8` (localises the file)
  no-localize    the same with `--no-localize`
  debug          `bridge debug SOURCE model_int8.tflite` on the file the first run left

Models: the MobileNetV2-class sample (96x96, trained; its calibration images) and, when the zoo
cache is there (benchmarks/zoo/build.py), PP-OCRv4-rec (trained, from the PaddleOCR wheel, 48x320,
397 nodes; its own calibration samples). Wall seconds are the parent's; `localize_s` is what the
report's `parity.localization.seconds` says the stage took. Medians of `--repeat` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BRIDGE = Path(sys.executable).with_name("bridge")
STRICT = ("--threshold", "int8@snr_db_min=60")


def models(zoo: Path) -> dict[str, tuple[str, tuple[str, ...]]]:
    found = {"mobilenet_shapes (96x96)": (f"{ROOT / 'samples/mobilenet_shapes.py'}:load",
                                          ("--calibration", str(ROOT / "samples/calibration")))}
    rec = zoo / "models/ppocrv4-rec"
    if (rec / "static.onnx").exists():
        found["ppocrv4-rec (48x320)"] = (str(rec / "static.onnx"),
                                         ("--calibration", str(rec / "calibration"), "--input", "x:1,3,48,320"))
    return found


def timed(*args: str) -> tuple[float, int]:
    start = time.perf_counter()
    r = subprocess.run([str(BRIDGE), *args], capture_output=True, text=True)
    if r.returncode not in (0, 1) or "Traceback" in r.stderr:
        raise SystemExit(f"bridge {' '.join(args[:2])} failed ({r.returncode}): {r.stderr[-2000:]}")
    return time.perf_counter() - start, r.returncode


def failed_report(out: Path) -> dict:
    return json.loads((out / ".bridge-failed" / "report.json").read_text())


def once(source: str, extra: tuple[str, ...], tmp: Path) -> dict:
    common = ("--target", "tflite", "--quantize", "tflite=int8", *extra, *STRICT, "--no-cache")
    with_loc, code = timed("convert", source, "--out", str(tmp / "a"), *common)
    rep = failed_report(tmp / "a")
    loc = rep["artifacts"][0]["parity"]["localization"]
    without, _ = timed("convert", source, "--out", str(tmp / "b"), *common, "--no-localize")
    art = next((tmp / "a" / ".bridge-failed").glob("*_int8.tflite"), None) or next((tmp / "a").rglob("*_int8.tflite"))
    inputs = tuple(a for pair in zip(extra[::2], extra[1::2], strict=True) if pair[0] == "--input" for a in pair)
    debug, _ = timed("debug", source, str(art), "--report", str(tmp / "debug.json"), *inputs, *STRICT)
    dloc = json.loads((tmp / "debug.json").read_text())["artifacts"][0]["parity"]["localization"]
    return {"exit": code, "convert_s": with_loc, "no_localize_s": without, "debug_s": debug,
            "localize_s": loc["seconds"], "debug_localize_s": dloc["seconds"],
            "named": (loc.get("first_divergent") or {}).get("node"),
            "isolated_worst": ((loc.get("isolated") or {}).get("worst") or {}).get("node"),
            "layers": loc.get("mapped", {}).get("layers"), "hub_nodes": loc.get("mapped", {}).get("hub_nodes")}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--json", type=Path)
    p.add_argument("--zoo", type=Path, default=Path(os.environ.get("BRIDGE_ZOO_CACHE", "~/.cache/bridge-zoo")))
    p.add_argument("--workdir", type=Path)
    args = p.parse_args()
    results = {}
    for name, (source, extra) in models(args.zoo.expanduser()).items():
        runs = []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory(prefix="bridge-bench-localize-", dir=args.workdir) as tmp:
                runs.append(once(source, extra, Path(tmp)))
        med = {k: round(statistics.median(r[k] for r in runs), 2) for k in runs[0] if k.endswith("_s")}
        med["added_s"] = round(med["convert_s"] - med["no_localize_s"], 2)
        results[name] = {**med, **{k: runs[-1][k] for k in ("named", "isolated_worst", "layers", "hub_nodes")}}
        print(name, json.dumps(results[name]), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"python": sys.version.split()[0], "repeat": args.repeat,
                                         "models": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
