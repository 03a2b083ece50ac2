"""Which 4-bit look-up-table recipe keeps a trained model within its threshold? Measured, not guessed.

    python benchmarks/palettize_groups.py MODEL.onnx --samples DIR [--input x:1,3,480,640] \
        [--groups 0,8,g8-a1,g8-s,g1-gather8] [--target iOS18] [--json out.json] [--hub HUB.onnx]

Converts MODEL (an ONNX file; `--input` fixes its dynamic dims as for `bridge convert`) to the hub
with the installed `bridge` (`--target onnx`), lowers the hub to MIL once per recipe with the Core
ML lane's own builder, palettizes it with coremltools, saves the .mlpackage and runs it in the
reference executor on the last 8 samples of DIR (`*.npz`, arrays named by input: what bridge holds
out for parity from 24 calibration samples). The reference is onnxruntime on the hub. Prints, per
recipe, the worst output's SNR and cosine, the FULL_INT verdict (15 dB and 0.98), the package's
bytes and how many weights coremltools left uncompressed.

A recipe is tokens joined by `-` (see `Recipe.parse`): `none` (fp16, no tables), `t` (one table per
tensor), `gN` (N output channels per table), `aK` (group along axis K instead), `s` (a per-channel
scale first: `enable_per_channel_scale`), `u` (uniform tables instead of k-means), `vN` (`cluster_dim`
N: N-element vectors per entry), `4`/`6`/`8` (bits), and a rule for gather tables (embeddings):
`gather-` followed by `fp16`, `t` (per tensor) or `8` (8 bits per tensor). The old forms `0`, `8`,
`8s` still mean per tensor, 8 channels, 8 channels with a scale.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Recipe:
    tables: bool = True  # False: fp16, no palettization
    group: int = 0  # output channels per table; 0: one table per tensor
    axis: int | None = None  # the axis grouped (coremltools picks the output-channel axis when None)
    scale: bool = False  # enable_per_channel_scale
    mode: str = "kmeans"
    cluster_dim: int = 1
    nbits: int = 4
    gather: str = "same"  # gather tables (embeddings): same | fp16 | t (per tensor, nbits) | 8 (8 bits per tensor)
    only: str = ""  # palettize only the weights whose name this regular expression finds (the rest stay fp16)
    keep8: str = ""  # weights whose name this regular expression finds get int8 per channel instead of tables

    @classmethod
    def parse(cls, spec: str) -> Recipe:
        old = {"none": "none", "0": "t"}.get(spec) or (f"g{spec[:-1]}-s" if spec.endswith("s") and spec[:-1].isdigit()
                                                     else f"g{spec}" if spec.isdigit() else spec)
        if old == "none":
            return cls(tables=False)
        fields: dict = {}
        for token in old.split("-"):
            if "=" in token:
                key, value = token.split("=", 1)
                fields[{"emb": "gather", "only": "only", "keep8": "keep8"}[key]] = value
            elif token == "t":
                fields["group"] = 0
            elif token == "s":
                fields["scale"] = True
            elif token == "u":
                fields["mode"] = "uniform"
            elif token[0] in "gav" and token[1:].isdigit():
                fields[{"g": "group", "a": "axis", "v": "cluster_dim"}[token[0]]] = int(token[1:])
            elif token.isdigit():
                fields["nbits"] = int(token)
            else:
                raise SystemExit(f"recipe {spec!r}: unknown token {token!r} (see the module docstring)")
        return cls(**fields)

    def config(self, opt, **override):
        fields = {"mode": self.mode, "nbits": self.nbits, "cluster_dim": self.cluster_dim,
                  "enable_per_channel_scale": self.scale, **override}
        if fields.pop("per_tensor", False) or not self.group:
            grouping = {"granularity": "per_tensor"}
        else:
            grouping = {"granularity": "per_grouped_channel", "group_size": self.group, "channel_axis": self.axis}
        from bridge.converters.coreml.compress import WEIGHT_THRESHOLD

        return opt.OpPalettizerConfig(weight_threshold=WEIGHT_THRESHOLD, **grouping, **fields)


def hub(model: str, inputs: list[str], out: Path) -> Path:
    cmd = [str(Path(sys.executable).parent / "bridge"), "convert", model, "--target", "onnx", "--out", str(out)]
    for flag in inputs:
        cmd += ["--input", flag]
    done = subprocess.run(cmd, capture_output=True, text=True)
    found = [*out.glob("*.onnx"), *out.glob(".bridge-failed/*.onnx")]  # exit 1: a hub that missed fp32 parity
    if done.returncode not in (0, 1) or not found:
        raise SystemExit(f"bridge convert --target onnx failed: {done.stderr[-2000:]}")
    return found[0]


def weights(program):
    """The const ops coremltools' palettizer would consider: float, at least WEIGHT_THRESHOLD elements."""
    from bridge.converters.coreml.compress import WEIGHT_THRESHOLD

    for op in program.functions["main"].operations:
        val = op.outputs[0].val if op.op_type == "const" else None
        if val is not None and getattr(val, "dtype", None) is not None and val.dtype.kind == "f" \
                and val.size >= WEIGHT_THRESHOLD and op.outputs[0].child_ops:
            yield op


def group_skips(program, recipe: Recipe) -> list[str]:
    """The weights coremltools will skip because the group size does not divide their channels.
    With `enable_per_channel_scale` it divides such a weight by its scale in place before skipping
    it (coremltools 9.0, `palettize_weights.transform_op`), so they must not get that config."""
    from coremltools.optimize._utils import select_input_output_channel_axis

    skipped = []
    for op in weights(program):
        _, out_axis = select_input_output_channel_axis(op)
        axis = out_axis if recipe.axis is None else recipe.axis
        if axis is None or op.outputs[0].val.shape[axis] % recipe.group:
            skipped.append(op.name)
    return skipped


def optimization(program, recipe: Recipe):
    from coremltools.optimize import coreml as opt

    by_type = {}
    if recipe.gather != "same":
        by_type["gather"] = None if recipe.gather == "fp16" else \
            recipe.config(opt, per_tensor=True, nbits=int(recipe.gather) if recipe.gather.isdigit() else recipe.nbits,
                          enable_per_channel_scale=False, cluster_dim=1)
    by_name = {}
    if recipe.scale and recipe.group:
        by_name = {name: None for name in group_skips(program, recipe)}
    for op in weights(program):
        if (recipe.only and not re.search(recipe.only, op.name)) or (recipe.keep8 and re.search(recipe.keep8, op.name)):
            by_name[op.name] = None
    return opt.OptimizationConfig(global_config=recipe.config(opt), op_type_configs=by_type, op_name_configs=by_name)


def package(hub_path: Path, spec: str, target: str, out: Path) -> Path:
    import coremltools as ct
    import onnx
    from coremltools.optimize import coreml as opt

    from bridge.converters.coreml.build import build_program

    recipe = Recipe.parse(spec)
    built = build_program(onnx.load(str(hub_path)), getattr(ct.target, target))
    mlmodel = ct.convert(built.program, convert_to="mlprogram", compute_precision=ct.precision.FLOAT16,
                         minimum_deployment_target=getattr(ct.target, target), skip_model_load=True)
    if recipe.tables:
        program = mlmodel._mil_program  # noqa: SLF001
        kept = [op.name for op in weights(program) if recipe.keep8 and re.search(recipe.keep8, op.name)]
        mlmodel = opt.palettize_weights(mlmodel, optimization(program, recipe))
        if kept:
            int8 = opt.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel",
                                               weight_threshold=0)
            mlmodel = opt.linear_quantize_weights(mlmodel, opt.OptimizationConfig(
                global_config=None, op_name_configs=dict.fromkeys(kept, int8)))
    path = out / f"{spec.replace('=', '_')}.mlpackage"
    mlmodel.save(str(path))
    return path


def left_fp16(path: Path) -> int:
    """How many weights of at least WEIGHT_THRESHOLD elements the package stores uncompressed."""
    from bridge.validators.runners.coreml_reference.loader import load_package

    return sum(1 for op in weights(load_package(str(path)).program)
               if not any(c.op_type.startswith("constexpr_") for c in op.outputs[0].child_ops))


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
            "bytes": sum(f.stat().st_size for f in path.rglob("*") if f.is_file()), "left_fp16": left_fp16(path)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--samples", required=True)
    p.add_argument("--input", action="append", default=[])
    p.add_argument("--groups", default="0,8,16,32", help="comma-separated recipes (see the module docstring)")
    p.add_argument("--target", default="iOS18")
    p.add_argument("--json", help="write (or add to) this JSON file")
    p.add_argument("--hub", help="a hub ONNX file made already (bridge convert --target onnx): skips making one")
    a = p.parse_args()
    files = sorted(Path(a.samples).glob("*.npz"))[-8:]
    samples = [dict(np.load(f)) for f in files]
    rows = json.loads(Path(a.json).read_text())["groups"] if a.json and Path(a.json).exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        hub_path = Path(a.hub) if a.hub else hub(a.model, a.input, Path(tmp) / "hub")
        for spec in a.groups.split(","):
            t = time.perf_counter()
            path = package(hub_path, spec, a.target, Path(tmp))
            seconds = round(time.perf_counter() - t, 1)
            rows[spec] = {**measure(path, hub_path, samples), "convert_seconds": seconds}
            print(f"{spec}: {rows[spec]}", flush=True)
            if a.json:
                record = {"model": a.model, "target": a.target, "groups": rows}
                Path(a.json).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
