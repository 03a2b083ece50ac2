"""`bridge batch` on the test zoo (benchmarks/batch_zoo.py), cold cache against warm, and a re-run
with one model's quantize list changed.

    python benchmarks/bench_batch.py [--jobs 2] [--repeat N] [--json PATH] [--workdir DIR]
    python benchmarks/bench_batch.py --trained [--zoo ~/.cache/bridge-zoo] ...

Each repeat builds the zoo in a fresh temporary folder with an empty cache, then runs, through the
installed console script:

  cold     `bridge batch matrix-fp32.toml --jobs N --cache-dir C` (every stage runs; C fills)
  warm     the same command again (nothing changed: every stage comes from C)
  changed  the torch model's TFLite list becomes fp32,fp16: only its TFLite lane should run

bridge's own modules are byte-compiled first (benchmarks/bytecode.py), as pip does for an installed
package. Wall seconds come from the parent; what ran comes from each model's report.json (`stage_runs`).
The goal: warm <= 0.05x cold, and `changed` runs the changed lane's stages only.

With `--trained`, the matrix is four trained models from the zoo cache (`benchmarks/zoo/build.py`
makes it): cold and warm only, each model with its zoo calibration folder, TFLite fp32 and fp16,
Core ML fp16. It shows what a warm run costs where the models weigh something.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.batch_zoo import BRIDGE, build, write_matrix  # noqa: E402
from benchmarks.bytecode import compile_bridge  # noqa: E402


def run(zoo: Path, matrix: Path, out: str, jobs: int) -> dict:
    start = time.perf_counter()
    r = subprocess.run([str(BRIDGE), "batch", matrix.name, "--out", out, "--jobs", str(jobs), "--cache-dir",
                        str(zoo / "cache")], cwd=zoo, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    summary = json.loads((zoo / out / "summary.json").read_text())
    ran = {}
    for m in summary["models"]:
        report = json.loads((zoo / out / m["report"]).read_text())
        ran[m["name"]] = [s["stage"] for s in report.get("stage_runs", []) if s["cache"] != "reused"]
    return {"seconds": round(seconds, 2), "exit": r.returncode, "ran": ran}


# name -> (file in the zoo's models/, --input), as benchmarks/mixed_table.py runs them
TRAINED = {"ppocr-cls": ("ppocr-cls/ch_ppocr_mobile_v2.0_cls_infer.onnx", "x:1,3,48,192"),
           "ppocrv4-det": ("ppocrv4-det/ch_PP-OCRv4_det_infer.onnx", "x:1,3,480,640"),
           "nudenet-320n": ("nudenet-320n/320n.onnx", "images:1,3,320,320"),
           "ddddocr-det": ("ddddocr-det/common_det.onnx", None)}


def trained_matrix(folder: Path, zoo: Path) -> Path:
    text = ['[defaults]\ntargets = ["onnx", "tflite", "coreml"]\nquantize = ["tflite=fp32,fp16", "coreml=fp16"]\n'
            'timeout = 1800\n']
    for name, (file, shape) in TRAINED.items():
        models = zoo / "models"
        if not (models / file).is_file():
            raise SystemExit(f"{models / file} is missing: run python benchmarks/zoo/build.py --only {name}")
        text.append(f'[[model]]\nname = "{name}"\nsource = "{models / file}"\n'
                    f'calibration = "{models / name / "calibration"}"\n' + (f'input = ["{shape}"]\n' if shape else ""))
    matrix = folder / "trained.toml"
    matrix.write_text("\n".join(text))
    return matrix


def once_trained(jobs: int, workdir: Path | None, zoo: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="bridge-bench-batch-", dir=workdir) as tmp:
        matrix = trained_matrix(Path(tmp), zoo)
        return {"cold": run(Path(tmp), matrix, "out-cold", jobs), "warm": run(Path(tmp), matrix, "out-warm", jobs)}


def once(jobs: int, workdir: Path | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="bridge-bench-batch-", dir=workdir) as tmp:
        zoo = Path(tmp)
        matrix = build(zoo)
        cold = run(zoo, matrix, "out-cold", jobs)
        warm = run(zoo, matrix, "out-warm", jobs)
        changed = run(zoo, write_matrix(zoo, "fp32,fp16"), "out-changed", jobs)
    return {"cold": cold, "warm": warm, "changed": changed}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--json", type=Path)
    p.add_argument("--workdir", type=Path, help="Where the zoo and its cache go (default: the temporary folder).")
    p.add_argument("--trained", action="store_true", help="The zoo's trained models instead of the test zoo.")
    p.add_argument("--zoo", type=Path, default=Path.home() / ".cache/bridge-zoo")
    a = p.parse_args()
    compile_bridge(BRIDGE.parent / "python")  # as pip does for the packages bridge is compared with
    runs = [once_trained(a.jobs, a.workdir, a.zoo) if a.trained else once(a.jobs, a.workdir) for _ in range(a.repeat)]
    kinds = ("cold", "warm") if a.trained else ("cold", "warm", "changed")
    median = {k: statistics.median(r[k]["seconds"] for r in runs) for k in kinds}
    figures = {"matrix": "trained" if a.trained else "test zoo", "jobs": a.jobs, "repeat": a.repeat,
               "seconds": median, "warm_over_cold": round(median["warm"] / median["cold"], 4),
               **({} if a.trained else {"changed_over_cold": round(median["changed"] / median["cold"], 4)}),
               "ran": {k: runs[-1][k]["ran"] for k in kinds}, "runs": runs}
    print(f"{'run':8} {'seconds':>8} {'x cold':>7}  stages run")
    for k in kinds:
        ran = {m: s for m, s in figures["ran"][k].items() if s}
        print(f"{k:8} {median[k]:8.1f} {median[k] / median['cold']:7.3f}  {ran or 'none'}")
    if a.json:
        a.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
