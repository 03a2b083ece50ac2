"""How many output channels should share one 4-bit look-up table? Measured, not guessed.

    python benchmarks/palettize_groups.py MODEL.onnx --samples DIR [--input x:1,3,480,640] \
        [--groups 0,8,16,32] [--target iOS18] [--json out.json]

Converts MODEL (an ONNX file; `--input` fixes its dynamic dims as for `bridge convert`) to the hub
with the installed `bridge` (`--target onnx`), lowers the hub to MIL once per group size with the
Core ML lane's own builder, palettizes it to 4 bits (group 0: one table per tensor, as before
iOS18), saves the .mlpackage and runs it in the reference executor on the last 8 samples of DIR
(`*.npz`, arrays named by input: what bridge holds out for parity from 24 calibration samples).
The reference is onnxruntime on the hub. Prints, per group size, the worst output's SNR and
cosine, the FULL_INT verdict (15 dB and 0.98) and the package's bytes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def hub(model: str, inputs: list[str], out: Path) -> Path:
    cmd = [str(Path(sys.executable).parent / "bridge"), "convert", model, "--target", "onnx", "--out", str(out)]
    for flag in inputs:
        cmd += ["--input", flag]
    done = subprocess.run(cmd, capture_output=True, text=True)
    found = [*out.glob("*.onnx"), *out.glob(".bridge-failed/*.onnx")]  # exit 1: a hub that missed fp32 parity
    if done.returncode not in (0, 1) or not found:
        raise SystemExit(f"bridge convert --target onnx failed: {done.stderr[-2000:]}")
    return found[0]


def package(hub_path: Path, spec: str, target: str, out: Path) -> Path:
    """`spec`: none (fp16, no palettization), 0 (per-tensor tables), N (N output channels per table),
    Ns (the same with a per-channel scale first: `enable_per_channel_scale`)."""
    import coremltools as ct
    import onnx
    from coremltools.optimize import coreml as opt

    from bridge.converters.coreml.build import build_program
    from bridge.converters.coreml.compress import WEIGHT_THRESHOLD

    model = onnx.load(str(hub_path))
    built = build_program(model, getattr(ct.target, target))
    mlmodel = ct.convert(built.program, convert_to="mlprogram", compute_precision=ct.precision.FLOAT16,
                         minimum_deployment_target=getattr(ct.target, target), skip_model_load=True)
    # the palettize-4 mode's settings (compress.compress), with the group size under test
    if spec != "none":
        group = int(spec.rstrip("s"))
        grouping = {"granularity": "per_grouped_channel", "group_size": group} if group else \
            {"granularity": "per_tensor"}
        config = opt.OpPalettizerConfig(mode="kmeans", nbits=4, weight_threshold=WEIGHT_THRESHOLD,
                                        enable_per_channel_scale=spec.endswith("s"), **grouping)
        mlmodel = opt.palettize_weights(mlmodel, opt.OptimizationConfig(global_config=config))
    path = out / f"g{spec}.mlpackage"
    mlmodel.save(str(path))
    return path


def measure(path: Path, hub_path: Path, samples: list[dict]) -> dict:
    import onnxruntime as ort

    from bridge.converters.coreml.build import feature_name
    from bridge.validators.compare import metrics
    from bridge.validators.runners.coreml_reference.runner import ReferenceRunner

    sess = ort.InferenceSession(str(hub_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    runner = ReferenceRunner()
    runner.load(str(path))
    ref = {n: [] for n in names}
    got = {n: [] for n in names}
    for s in samples:
        for n, v in zip(names, sess.run(names, s), strict=True):
            ref[n].append(v)
        out = runner.infer({feature_name(k): v for k, v in s.items()})
        for n in names:
            got[n].append(out[feature_name(n)])
    ms = [metrics(got[n], ref[n]) for n in names]
    worst = min(ms, key=lambda m: m.snr_db)
    return {"snr_db": round(worst.snr_db, 2), "cosine": round(worst.cosine, 5),
            "passes": bool(worst.snr_db >= 15 and worst.cosine >= 0.98),
            "bytes": sum(f.stat().st_size for f in path.rglob("*") if f.is_file())}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--samples", required=True)
    p.add_argument("--input", action="append", default=[])
    p.add_argument("--groups", default="0,8,16,32", help="comma-separated: none, 0 (per tensor), N, Ns (see package)")
    p.add_argument("--target", default="iOS18")
    p.add_argument("--json")
    p.add_argument("--hub", help="a hub ONNX file made already (bridge convert --target onnx): skips making one")
    a = p.parse_args()
    files = sorted(Path(a.samples).glob("*.npz"))[-8:]
    samples = [dict(np.load(f)) for f in files]
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        hub_path = Path(a.hub) if a.hub else hub(a.model, a.input, Path(tmp) / "hub")
        for spec in a.groups.split(","):
            t = time.perf_counter()
            path = package(hub_path, spec, a.target, Path(tmp))
            seconds = round(time.perf_counter() - t, 1)
            rows[spec] = {**measure(path, hub_path, samples), "convert_seconds": seconds}
            print(f"group {spec}: {rows[spec]}", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"model": a.model, "target": a.target, "groups": rows}, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
