"""A Core ML `int8-mixed` step cut by `remix` against the full conversion keeping the same layers:

    python benchmarks/coreml_remix_check.py HUB.onnx --samples DIR --keep a,b,c [--keep ...]

HUB is a hub ONNX file (what `bridge convert --target onnx` writes). Activation ranges come from the
first samples of DIR (all but the last 8, bridge's parity hold-out). The lane converts the search's
first step (nothing kept: the W8A8 package and what `remix` reads), then for each `--keep` list the
lane's `remix` and a full conversion with that `--coreml-keep`; both run on our reference executor on
the 8 held-out samples. Prints per list: seconds of each, bytes of each, the worst output's SNR of
the remix against the full conversion and of each against onnxruntime on the hub.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def snr(actual: np.ndarray, reference: np.ndarray) -> float:
    a, r = actual.astype(np.float64).ravel(), reference.astype(np.float64).ravel()
    noise = float(((a - r) ** 2).sum())
    return float("inf") if noise == 0 else round(10 * np.log10(float((r ** 2).sum()) / noise), 2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("hub", type=Path)
    p.add_argument("--samples", type=Path, required=True)
    p.add_argument("--keep", action="append", default=[])
    args = p.parse_args()

    import onnx
    import onnxruntime as ort

    from bridge.base.lane import MIXED_BASE, LaneRequest
    from bridge.base.tensors import TensorSpec
    from bridge.converters.coreml import CoreMLOptions
    from bridge.converters.coreml.build import feature_name
    from bridge.converters.coreml.lane import convert
    from bridge.converters.coreml.remix import remix
    from bridge.converters.onnx.ranges import activation_ranges
    from bridge.validators.runners.coreml import CoreMLRunner

    model = onnx.load(str(args.hub))
    feeds = [dict(np.load(f)) for f in sorted(args.samples.glob("*.npz"))]
    names = [i.name for i in model.graph.input]
    feeds = [{k: f[k] for k in names} for f in feeds]
    calibration, parity = feeds[:-8], feeds[-8:]
    session = ort.InferenceSession(str(args.hub), providers=["CPUExecutionProvider"])
    reference = [session.run(None, f) for f in parity]
    outs = [o.name for o in model.graph.output]
    specs = lambda vs, f: tuple(TensorSpec(v.name, tuple(f[v.name].shape)) for v in vs)  # noqa: E731
    work = Path(tempfile.mkdtemp(prefix="cml-remix-"))
    ranges = activation_ranges(model, calibration)

    def request(keep: str, folder: str) -> LaneRequest:
        (work / folder).mkdir()
        return LaneRequest(str(args.hub), str(work / folder), "m", ("int8-mixed",), "onnx", specs(
            model.graph.input, parity[0]), specs(model.graph.output, dict(zip(outs, reference[0], strict=True))),
            calibration, {}, CoreMLOptions(keep=keep), ranges=ranges)

    def run(path: str) -> list[list[np.ndarray]]:
        runner = CoreMLRunner()
        runner.load(path)
        return [[runner.infer(f)[feature_name(o)] for o in outs] for f in parity]

    t = time.perf_counter()
    first = convert(request("", "first"))[0]
    print(json.dumps({"first step": round(time.perf_counter() - t, 1), "error": str(first.error or "")}))
    base = first.details[MIXED_BASE]
    for i, keep in enumerate(args.keep):
        t = time.perf_counter()
        made = remix(base, tuple((n,) for n in keep.split(",")), {}, str(work / f"remix-{i}.mlpackage"))
        remixed = time.perf_counter() - t
        t = time.perf_counter()
        full = convert(request(keep, f"full-{i}"))[0]
        converted = time.perf_counter() - t
        a, b = run(made.path), run(full.path)
        size = lambda path: sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())  # noqa: E731
        print(json.dumps({
            "kept": len(keep.split(",")), "remix_s": round(remixed, 2), "full_s": round(converted, 1),
            "remix_bytes": size(made.path), "full_bytes": size(full.path),
            "float16_weights": [len(made.details["kept_weights"]), len(full.details.get("kept_weights", []))],
            "remix_vs_full_db": min(snr(x, y) for s, u in zip(a, b, strict=True) for x, y in zip(s, u, strict=True)),
            "identical": all(np.array_equal(x, y) for s, u in zip(a, b, strict=True)
                             for x, y in zip(s, u, strict=True)),
            "remix_db": min(snr(x, y) for s, r in zip(a, reference, strict=True) for x, y in zip(s, r, strict=True)),
            "full_db": min(snr(x, y) for s, r in zip(b, reference, strict=True) for x, y in zip(s, r, strict=True))}),
            flush=True)


if __name__ == "__main__":
    main()
