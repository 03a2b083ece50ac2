"""Speed of the Core ML reference executor against onnxruntime on the same model, one CPU thread.

    python benchmarks/bench_coreml_executor.py [--model samples/mobilenet_shapes.py:load] [--runs 20]

Converts the model once with `bridge convert --target onnx --target coreml` (fp32 and fp16), then
times one inference of each artifact: onnxruntime on the ONNX file (1 intra-op thread), and the
reference executor on each .mlpackage (numpy with OMP/BLAS threads pinned to 1). Reports the median
and the ratio executor / onnxruntime; the goal is <= 20x.
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
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"


def _median_seconds(fn, runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=f"{ROOT}/samples/mobilenet_shapes.py:load")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import numpy as np
    import onnxruntime as ort

    from bridge.validators.runners.coreml_reference import ReferenceRunner

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        subprocess.run([sys.executable, "-m", "bridge.cli", "convert", args.model, "--target", "onnx", "--target",
                        "coreml", "--quantize", "coreml=fp32,fp16,int8-weights,palettize-4", "--out", str(out)],
                       check=False, capture_output=True)
        report = json.loads((out / "report.json").read_text())
        spec = report["source"]["inputs"][0]
        x = np.random.default_rng(0).standard_normal(spec["shape"]).astype(np.float32)
        onnx_path = next(out / a["path"] for a in report["artifacts"] if a["target"] == "onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        base = _median_seconds(lambda: session.run(None, {spec["name"]: x}), args.runs)
        rows = [("onnxruntime (onnx)", base, 1.0)]
        for a in report["artifacts"]:
            if a["target"] != "coreml" or not a["path"]:
                continue
            runner = ReferenceRunner()
            runner.load(str(out / a["path"]))
            name = a["io"]["inputs"][0]["artifact_name"]
            seconds = _median_seconds(lambda r=runner, n=name: r.infer({n: x}), args.runs)
            rows.append((f"coreml-reference ({a['quantization']})", seconds, seconds / base))
    print(f"model: {args.model}  input {spec['shape']}  runs {args.runs}")
    print(f"{'runtime':34} {'ms':>9} {'ratio':>7}")
    for name, seconds, ratio in rows:
        print(f"{name:34} {seconds * 1e3:9.2f} {ratio:6.1f}x")
    if args.json:
        args.json.write_text(json.dumps([{"runtime": n, "seconds": s, "ratio": r} for n, s, r in rows], indent=2))


if __name__ == "__main__":
    main()
