"""`bridge batch` on the test zoo (benchmarks/batch_zoo.py), cold cache against warm, and a re-run
with one model's quantize list changed.

    python benchmarks/bench_batch.py [--jobs 2] [--repeat N] [--json PATH] [--workdir DIR]

Each repeat builds the zoo in a fresh temporary folder with an empty cache, then runs, through the
installed console script:

  cold     `bridge batch matrix-fp32.toml --jobs N --cache-dir C` (every stage runs; C fills)
  warm     the same command again (nothing changed: every stage comes from C)
  changed  the torch model's TFLite list becomes fp32,fp16: only its TFLite lane should run

bridge's own modules are byte-compiled first (benchmarks/bytecode.py), as pip does for an installed
package. Wall seconds come from the parent; what ran comes from each model's report.json (`stage_runs`).
The goal: warm <= 0.05x cold, and `changed` runs the changed lane's stages only.
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
    a = p.parse_args()
    compile_bridge(BRIDGE.parent / "python")  # as pip does for the packages bridge is compared with
    runs = [once(a.jobs, a.workdir) for _ in range(a.repeat)]
    median = {k: statistics.median(r[k]["seconds"] for r in runs) for k in ("cold", "warm", "changed")}
    figures = {"jobs": a.jobs, "repeat": a.repeat, "seconds": median,
               "warm_over_cold": round(median["warm"] / median["cold"], 4),
               "changed_over_cold": round(median["changed"] / median["cold"], 4),
               "ran": {k: runs[-1][k]["ran"] for k in ("cold", "warm", "changed")}, "runs": runs}
    print(f"{'run':8} {'seconds':>8} {'x cold':>7}  stages run")
    for k in ("cold", "warm", "changed"):
        ran = {m: s for m, s in figures["ran"][k].items() if s}
        print(f"{k:8} {median[k]:8.1f} {median[k] / median['cold']:7.3f}  {ran or 'none'}")
    if a.json:
        a.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
