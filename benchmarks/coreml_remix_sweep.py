"""Core ML `int8-mixed` with chosen layers kept, many choices cheaply: the search's first step is
converted once and every choice is cut from it by the lane's `remix` (as the search's later steps
are), then run on our reference executor against onnxruntime on the hub:

    python benchmarks/coreml_remix_sweep.py HUB.onnx --samples DIR --keep SPEC [--keep SPEC ...] [--full] [--weights]

HUB is a hub ONNX file (`bridge convert SOURCE --target onnx` writes it); DIR holds `*.npz` samples
named by input, the last 8 held out for parity as bridge does (ranges from the others). A SPEC is a
comma-separated list of hub node names, `types=Conv+MatMul` (every node of those op types),
`not-types=MatMul+Gemm` (every node but those), `match=REGEX` / `not-match=REGEX` (the nodes whose
name the regular expression finds / every node but those). Prints per SPEC: layers kept, the worst output's
SNR and cosine (`bridge.validators.compare.metrics`, as parity computes them), bytes, remix seconds;
with `--full`, also the full conversion with that `--coreml-keep` (its seconds, bytes, figures) and
the remix's figures against it. Kept layers keep their int8 weights (W8A16) unless `--weights` (the
search's wide step, `--coreml-keep-weights`: their float16 weights too).
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

import numpy as np


def chosen(spec: str, model) -> list[str]:
    if spec.startswith(("match=", "not-match=")):
        pattern, keep = re.compile(spec.split("=", 1)[1]), spec.startswith("match=")
        return [n.name for n in model.graph.node if bool(pattern.search(n.name)) == keep and n.op_type != "Constant"]
    if spec.startswith(("types=", "not-types=")):
        kinds = set(spec.split("=", 1)[1].split("+"))
        keep = spec.startswith("types=")
        return [n.name for n in model.graph.node if (n.op_type in kinds) == keep and n.op_type != "Constant"]
    return [n for n in spec.split(",") if n]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("hub", type=Path)
    p.add_argument("--samples", type=Path, required=True)
    p.add_argument("--keep", action="append", default=[])
    p.add_argument("--full", action="store_true", help="also convert each keep list in full and compare")
    p.add_argument("--weights", action="store_true", help="the kept layers' float16 weights too")
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
    from bridge.validators.compare import metrics
    from bridge.validators.runners.coreml import CoreMLRunner

    model = onnx.load(str(args.hub))
    names = [i.name for i in model.graph.input]
    feeds = [{k: (v.astype(np.int32) if v.dtype == np.int64 else v) for k, v in np.load(f).items() if k in names}
             for f in sorted(args.samples.glob("*.npz"))]
    calibration, parity = feeds[:-8], feeds[-8:]
    session = ort.InferenceSession(str(args.hub), providers=["CPUExecutionProvider"])
    outs = [o.name for o in model.graph.output]
    onnx_feed = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
    cast = lambda f: {k: v.astype(np.int64) if onnx_feed[k] == 7 else v for k, v in f.items()}  # noqa: E731
    reference = [dict(zip(outs, session.run(None, cast(f)), strict=True)) for f in parity]
    work = Path(tempfile.mkdtemp(prefix="cml-sweep-"))
    dtype = {1: "float32", 7: "int64", 6: "int32"}
    specs = tuple(TensorSpec(n, tuple(parity[0][n].shape), dtype[onnx_feed[n]]) for n in names)

    def request(keep: str, folder: str) -> LaneRequest:
        (work / folder).mkdir()
        return LaneRequest(str(args.hub), str(work / folder), "m", ("int8-mixed",), "onnx", specs,
                           tuple(TensorSpec(o, tuple(reference[0][o].shape)) for o in outs), calibration, {},
                           CoreMLOptions(keep=keep, keep_weights=args.weights and bool(keep)), ranges=ranges)

    ranges = activation_ranges(model, [cast(f) for f in calibration])
    t = time.perf_counter()
    first = convert(request("", "first"))[0]
    print(json.dumps({"first step": round(time.perf_counter() - t, 1), "error": str(first.error or "")}), flush=True)
    base = first.details[MIXED_BASE]

    def run(path: str) -> list[dict]:
        runner = CoreMLRunner()
        runner.load(path)
        return [{o: runner.infer(f)[feature_name(o)] for o in outs} for f in parity]

    def judge(path: str, against: list[dict] = reference, got: list[dict] | None = None) -> dict:
        got = got or run(path)
        ms = [metrics([g[o] for g in got], [r[o] for r in against], histogram=False) for o in outs]
        worst = min(ms, key=lambda m: m.snr_db)
        size = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
        return {"snr_db": round(worst.snr_db, 2), "cosine": round(worst.cosine, 4), "bytes": size}

    print(json.dumps({"keep": "nothing", **judge(base["int8"])}), flush=True)
    for i, spec in enumerate(args.keep):
        layers = chosen(spec, model)
        t = time.perf_counter()
        made = remix(base, tuple((n,) for n in layers), {}, str(work / f"sweep-{i}.mlpackage"), args.weights)
        row = {"keep": spec[:60], "kept": len(layers), "remix_s": round(time.perf_counter() - t, 2),
               **judge(made.path)}
        if args.full:
            t = time.perf_counter()
            full = convert(request(",".join(layers), f"full-{i}"))[0]
            row["full_s"] = round(time.perf_counter() - t, 1)
            outputs = run(full.path)
            row["full"] = judge(full.path, got=outputs)
            row["remix_vs_full"] = judge(made.path, against=outputs)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
