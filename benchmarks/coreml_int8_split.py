"""Where a Core ML int8 (W8A8) conversion's time goes, phase by phase, on a real model:

    python benchmarks/coreml_int8_split.py MODEL.onnx --samples DIR [--input x:1,3,480,640] [--hub HUB.onnx]

Makes the hub with the installed `bridge` (`--target onnx`), measures activation ranges on the first
samples of DIR (all but the last 8, which are bridge's parity hold-out), then times the Core ML
lane's own steps for `int8`: lowering to MIL with the activation quantize/dequantize hook (and
without it, for the hook's share), coremltools' pass pipeline (`ct.convert`), int8 weight
compression, saving the package (with the lane's deterministic spec and identifiers), and the
parity run on our reference executor (load + the 8 held-out samples). Prints seconds per phase.
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
    found = [*out.glob("*.onnx"), *out.glob(".bridge-failed/*.onnx")]
    if not found:
        raise SystemExit(f"bridge convert --target onnx failed: {done.stderr[-2000:]}")
    return found[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--samples", type=Path, required=True)
    p.add_argument("--input", action="append", default=[])
    p.add_argument("--hub", type=Path)
    p.add_argument("--target", default="iOS17")
    args = p.parse_args()

    import coremltools as ct
    import onnx

    from bridge.converters.coreml import compress as cm
    from bridge.converters.coreml.build import build_program
    from bridge.converters.coreml.lane import _quantize_activations
    from bridge.converters.coreml.package import deterministic_spec, stable_identifiers
    from bridge.converters.onnx.ranges import activation_ranges
    from bridge.validators.runners.coreml import CoreMLRunner

    work = Path(tempfile.mkdtemp(prefix="cml-split-"))
    hub_path = args.hub or hub(args.model, args.input, work / "hub")
    model = onnx.load(str(hub_path))
    files = sorted(args.samples.glob("*.npz"))
    feeds = [dict(np.load(f)) for f in files]
    calibration, parity = feeds[:-8], feeds[-8:]
    times: dict[str, float] = {}

    def timed(name, fn):
        t = time.perf_counter()
        out = fn()
        times[name] = round(time.perf_counter() - t, 2)
        return out

    ranges = timed("ranges (onnxruntime, not a lane step)", lambda: activation_ranges(model, calibration))
    target = getattr(ct.target, args.target)
    defaults = {i.name: tuple(parity[0][i.name].shape) for i in model.graph.input if i.name in parity[0]}
    timed("onnx->MIL without the activation hook", lambda: build_program(model, target, defaults=defaults))
    built = timed("onnx->MIL with the activation hook", lambda: build_program(
        model, target, after_op=_quantize_activations(ranges), defaults=defaults))
    mlmodel = timed("coremltools passes (ct.convert, fp16)", lambda: ct.convert(
        built.program, convert_to="mlprogram", compute_precision=ct.precision.FLOAT16,
        minimum_deployment_target=target, skip_model_load=True))
    mlmodel = timed("int8 weight compression", lambda: cm.compress(mlmodel, "int8", args.target))
    path = work / "model.mlpackage"

    def save():
        mlmodel.save(str(path))
        deterministic_spec(path)
        stable_identifiers(path)

    timed("save (+ deterministic spec, identifiers)", save)
    runner = CoreMLRunner()
    timed("parity: load on the reference executor", lambda: runner.load(str(path)))
    names = {i.name for i in model.graph.input}
    timed(f"parity: {len(parity)} samples", lambda: [runner.infer({k: v for k, v in f.items() if k in names})
                                                     for f in parity])
    print(json.dumps(times, indent=1))


if __name__ == "__main__":
    main()
