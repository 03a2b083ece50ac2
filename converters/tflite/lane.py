"""ONNX hub -> TFLite, without TensorFlow: one onnx2tf 2.x run, then every mode from its float32 file.

    hub --rewrites--> preflight --onnx2tf flatbuffer_direct--> float32 .tflite
                                                                 |-- fp32          as it is
                                                                 |-- fp16          fp16.float16_weights
                                                                 |-- dynamic-int8  dynamic.dynamic_int8
                                                                 '-- int8, int8-io, int16x8
                                                                        quantize.calibrate, one child each

Nothing here imports TensorFlow: onnx2tf 2.x builds the flatbuffer itself, and the modes are
flatbuffer rewrites or ai-edge-litert's own calibrating quantizer. The quantizer runs in a child
process per mode, because it aborts the process on some graphs; one failing mode never stops the
others. The lane's preflight (`preflight.unsupported`) has run before `convert` in the same stage.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from bridge.base.arrays import Feeds, write_feeds
from bridge.base.bindings import IO, Binding
from bridge.base.errors import ConversionError
from bridge.base.lane import MIXED_BASE, LaneArtifact, LaneRequest, for_each_mode
from bridge.base.lazy import require
from bridge.base.modes import ModeSpec
from bridge.base.tensors import TensorSpec
from bridge.converters.tflite import LANE, TFLiteOptions, direct
from bridge.converters.tflite import layout as lay
from bridge.converters.tflite.flatbuffer import custom_ops, flex_ops, op_counts, stateful_ops
from bridge.converters.tflite.modes import ModeConfig
from bridge.converters.tflite.preflight import refused_ops
from bridge.converters.tflite.quantize import Job, details_path

ROUTE = ("onnx", "onnx2tf(flatbuffer_direct)")
MAKERS = {"fp16-weights": "fp16-weights", "dynamic-range": "dynamic-range", "calibrated": "litert-quantizer"}


def convert(req: LaneRequest) -> list[LaneArtifact]:
    """Entry point of the `tflite-convert` stage. One failing mode never stops the others."""
    start = time.perf_counter()
    options: TFLiteOptions = req.options or TFLiteOptions()
    model, applied = _rewritten_hub(req)
    plan = lay.plan_inputs(req.inputs, req.framework, options.layout)
    try:
        fp32 = direct.convert_float(model, Path(req.workdir) / "onnx2tf", plan, req.node_names)
        direct.restore_float16_outputs(fp32.path, {s.name for s in req.outputs if s.dtype == "float16"})
        counts = op_counts(fp32.path.read_bytes())
        if custom_ops(counts):
            _refuse(model, req)
        if stateful_ops(counts):
            _refuse(model, req, ConversionError(
                f"onnx2tf's file keeps state between calls ({', '.join(stateful_ops(counts))}): every call after "
                "the first would start from the last call's state", stage="tflite-convert"))
    except ConversionError as e:
        _refuse(model, req, e)
    io_float = _bindings(req, fp32.path, plan)
    warnings = [f"ONNX rewritten before onnx2tf: {', '.join(applied)}"] if applied else []
    details = {"onnx2tf_correspondence": direct.correspondence(fp32.correspondence)}

    def make(mode_name: str, art: LaneArtifact) -> None:
        mode = LANE.mode(mode_name)
        cfg: ModeConfig = mode.config
        path = Path(req.workdir) / f"{req.name}_{mode.name}.tflite"
        art.route = (*ROUTE, MAKERS[cfg.make]) if cfg.make in MAKERS else ROUTE
        art.warnings += warnings
        art.details.update(details)
        art.correspondence = dict(details["onnx2tf_correspondence"].get("tensors", {}))
        try:
            art.warnings += _make(req, mode, fp32.path, io_float, path, art.details)
            if mode.mixed:
                _keep_float(req, model, details["onnx2tf_correspondence"], fp32.path, path, art)
            counts = op_counts(path.read_bytes())
            art.details.update({"ops": dict(sorted(counts.items())), "flex_ops": flex_ops(counts)})
            check_ops(counts, options.allow_flex)
            art.io = _read_io(path, io_float)
            art.path = str(path)
        except BaseException:
            path.unlink(missing_ok=True)  # a refused file is never shipped
            raise

    return for_each_mode(req.modes, make, stage="tflite-convert", route=ROUTE,
                         shared_seconds=time.perf_counter() - start)


def _refuse(model, req: LaneRequest, failure: ConversionError | None = None) -> None:
    """Name every node the lane refuses, all at once (the preflight's thorough check: onnx2tf's own
    node validators), when onnx2tf failed or wrote a custom op although the preflight passed."""
    refused = refused_ops(model, req.node_names, rewritten=True)
    if refused:
        raise ConversionError(f"{len(refused)} op type(s) the tflite lane refuses: "
                              + "; ".join(str(r) for r in refused), stage="tflite-preflight",
                              node=refused[0].nodes[0], op_type=refused[0].op_type)
    if failure is not None:
        raise failure


def _rewritten_hub(req: LaneRequest):
    onnx = require("onnx")
    from bridge.converters.tflite.rewrites import apply_rewrites

    model = onnx.load(req.hub_path)
    model, pinned = static_input_dims(model, req.inputs)
    return model, ([f"static-input-dims x{pinned}"] if pinned else []) + apply_rewrites(model)


def static_input_dims(model, inputs: tuple[TensorSpec, ...]):
    """The hub with every input dim the request keeps static written in, and its shape subgraphs
    folded (onnxslim, as the hub itself is made); returns it and how many dims were pinned.

    An ONNX source may name its dims ("batch", "sequence") while the run is static (no --dynamic):
    the hub keeps the names, and onnx2tf 2.6.9 then lowers shape arithmetic over them wrongly. Seen
    on BERT-style exports: the attention mask's Flatten reads a rank-3 shape from a rank-2 tensor,
    and the file fails at run time (RESHAPE 32 != 0). Pinning the dims alone is not enough (RESHAPE
    32 != 1); folded, the same graph converts and passes parity."""
    dynamic = {s.name: set(s.dynamic) for s in inputs}
    shapes = {s.name: s.shape for s in inputs}
    pinned = 0
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        shape = shapes.get(value.name)
        if shape is None or len(dims) != len(shape):
            continue
        for axis, (dim, size) in enumerate(zip(dims, shape, strict=True)):
            if axis not in dynamic[value.name] and not dim.HasField("dim_value") and size > 0:
                dim.Clear()
                dim.dim_value = size
                pinned += 1
    if not pinned:
        return model, 0
    from bridge.converters.onnx.hub import simplify

    return simplify(model), pinned


def check_ops(counts, allow_flex: bool) -> None:
    """Refuse a file a stock runtime cannot run: custom ops always (onnx2tf 2.x falls back to
    `ONNX_*` custom ops for a few patterns), Flex (Select TF) ops unless `--allow-flex`."""
    custom, flex = custom_ops(counts), flex_ops(counts)
    if custom:
        raise ConversionError(f"needs custom ops {', '.join(custom)}, which no stock TFLite runtime has",
                              stage="tflite-convert")
    if flex and not allow_flex:
        raise ConversionError(f"needs Flex (Select TF) ops {', '.join(flex)}, which stock TFLite "
                              "runtimes reject; pass --allow-flex to ship them anyway", stage="tflite-convert")


def _make(req: LaneRequest, mode: ModeSpec, fp32: Path, io_float: IO, path: Path, details: dict) -> list[str]:
    """Writes `mode`'s file to `path` and adds to `details` what its maker reports; returns its warnings."""
    cfg: ModeConfig = mode.config
    if cfg.make == "float":
        shutil.copyfile(fp32, path)
    elif cfg.make == "fp16-weights":
        from bridge.converters.tflite.fp16 import float16_weights

        path.write_bytes(float16_weights(fp32.read_bytes()))
    elif cfg.make == "dynamic-range":
        from bridge.converters.tflite.dynamic import dynamic_int8

        path.write_bytes(dynamic_int8(fp32.read_bytes()))
    else:
        return _calibrated(req, mode, fp32, io_float, path, details)
    return []


def _calibrated(req: LaneRequest, mode: ModeSpec, fp32: Path, io_float: IO, path: Path, details: dict) -> list[str]:
    """Strict integer kernels first; where an op has none, retry with float kernels admitted and say
    so (int16x8 admits them from the start, as few ops have int16 kernels)."""
    cfg: ModeConfig = mode.config
    if not req.calibration:
        raise ConversionError(f"{mode.name} needs calibration samples", stage="tflite-convert")
    order = [(b.name, b.perm, b.dtype) for b in io_float.inputs]
    try:
        details.update(_quantize_in_child(fp32, req, order, mode.name, cfg.float_fallback, path))
        return []
    except ConversionError as first:
        if cfg.float_fallback or isinstance(first, _Crashed):
            raise
        details.update(_quantize_in_child(fp32, req, order, mode.name, True, path))
        return [f"{mode.name}: some ops have no integer kernel and stay float ({first})"]


class _Crashed(ConversionError):
    pass


def _quantize_in_child(fp32: Path, req: LaneRequest, order, mode: str, allow_float: bool, path: Path) -> dict:
    """ai-edge-litert's quantizer in a process of its own: it aborts the process on some graphs
    (seen: a ViT in int16x8), which must cost this mode only. A plain subprocess, since stage
    children may not start multiprocessing children; it stays in the stage's process group, so
    the stage's timeout and kill reach it."""
    feeds = req.calibration if isinstance(req.calibration, Feeds) else \
        write_feeds(Path(req.workdir) / "tflite-calibration", req.calibration)
    job = Job(str(fp32), {"folder": feeds.folder, "names": list(feeds.names), "length": len(feeds)},
              [list(o) for o in order], mode, allow_float, str(path))
    done = subprocess.run([sys.executable, "-m", "bridge.converters.tflite.quantize", json.dumps(asdict(job))],
                          capture_output=True, text=True, preexec_fn=_die_with_parent)
    lines = [ln.strip() for ln in done.stderr.splitlines() if ln.strip()]
    if done.returncode == 0:
        made = Path(details_path(str(path)))
        if not made.exists():
            return {}
        found = json.loads(made.read_text())
        made.unlink()
        return found
    if done.returncode == 1 and lines and lines[-1].startswith("refused: "):
        raise ConversionError(lines[-1][len("refused: "):], stage="tflite-convert")
    how = f"signal {-done.returncode} ({_signal_name(-done.returncode)})" if done.returncode < 0 else \
        f"exit code {done.returncode}"
    tail = " | ".join(lines[-3:])[:400]
    raise _Crashed(f"ai-edge-litert's quantizer died for {mode} ({how})" + (f": {tail}" if tail else ""),
                   stage="tflite-convert")


def _keep_float(req: LaneRequest, model, correspondence: dict, fp32: Path, path: Path, art: LaneArtifact) -> None:
    """The int8 file at `path` with the --tflite-keep layers computing in float32 (`mixed.keep_float`):
    a layer is the ONNX node whose outputs onnx2tf's correspondence report names in the file. The
    search's first step (an empty keep list) also leaves the calibrated file and what `remix` needs
    to cut other keep lists into it, so its later steps never convert or calibrate again."""
    tensors = correspondence.get("tensors", {})
    if req.options.keep == "":
        base = path.with_name(f"{path.stem}.base.tflite")
        shutil.copyfile(path, base)
        art.details[MIXED_BASE] = {"int8": str(base), "float": str(fp32), "correspondence": tensors,
                                   "outputs": {n.name: list(n.output) for n in model.graph.node}}
    _cut_kept(req.options.keep, req.node_names, {n.name: list(n.output) for n in model.graph.node}, tensors,
              path.read_bytes(), fp32.read_bytes(), path, art)


HYBRID_KEPT = "float32 activations, int8 weights"  # `kept_precision` of a first-tier step


def remix(base: dict, units: tuple[tuple[str, ...], ...], node_names: dict[str, str], out: str,
          all_readers: bool = False, float32_weights: bool = False) -> LaneArtifact:
    """A search step of `int8-mixed` without converting again: the first step's calibrated int8 file
    with the layers in `units` cut back to float32 (each a fused group's node names, the layer's own
    first, and "@" + the TFLite tensor localisation found it at), with their weightless readers, or
    `all_readers` (`mixed.keep_float`): the search ranks layers by their own error, which includes
    their output's int8 rounding. A kept op with a hybrid kernel keeps int8 weights (float
    activations, `kept_precision` "float32 activations, int8 weights") unless `float32_weights`,
    the search's second tier. Returns the artifact's new path and details (the kept layers by
    their names, readers after them; op counts); the rest is the first step's."""
    from bridge.converters.onnx.graph import named_layers
    from bridge.converters.tflite.mixed import keep_float

    outputs, tensors = base["outputs"], base["correspondence"]
    flat = ",".join(dict.fromkeys(n for unit in units for n in unit if not n.startswith("@")))
    kept = named_layers(flat, _Nodes(outputs), node_names, "--tflite-keep", "tflite-convert")
    at = {tensors.get(o, o): layer for layer in kept for o in outputs[layer] if o}  # TFLite tensor -> node
    hub_of = {v: k for k, v in kept.items()} | {k: k for k in kept}
    at.update({n[1:]: hub_of.get(unit[0], unit[0]) for unit in units for n in unit if n.startswith("@")})
    data, missed, made = keep_float(Path(base["int8"]).read_bytes(), Path(base["float"]).read_bytes(),
                                    list(at), readers="all" if all_readers else "weightless",
                                    public=_public(outputs, tensors), nodes=list(kept), hybrid=not float32_weights)
    Path(out).write_bytes(data)
    changed = {at[t] for t in at if t not in missed}
    hub = {**{n: n for n in outputs}, **{node_names[n]: n for n in outputs if n in node_names}}
    layers = {hub[u[0]]: None for u in units if any(hub.get(n) in changed for n in u)}
    readers = {tensors.get(o, o): n for n in outputs for o in outputs[n] if o}
    layers.update({readers[t]: None for t in made if t in readers and t not in at})
    counts = op_counts(data)
    art = LaneArtifact(mode="int8-mixed", path=out)
    art.details.update({"kept_layers": [node_names.get(n, n) for n in layers],
                        "kept_precision": "float32" if float32_weights else HYBRID_KEPT,
                        "ops": dict(sorted(counts.items())), "flex_ops": flex_ops(counts)})
    return art


def _cut_kept(keep: str | None, node_names: dict[str, str], outputs: dict[str, list[str]], tensors: dict,
              int8: bytes, fp32: bytes, path: Path, art: LaneArtifact) -> None:
    from bridge.converters.onnx.graph import named_layers
    from bridge.converters.tflite.mixed import keep_float

    kept = named_layers(keep, _Nodes(outputs), node_names, "--tflite-keep", "tflite-convert")
    names = {tensors.get(o, o): layer for layer in kept for o in outputs[layer] if o}
    data, missed, _ = keep_float(int8, fp32, list(names), public=_public(outputs, tensors), nodes=list(kept))
    path.write_bytes(data)
    lost = sorted({kept[names[n]] for n in missed} - {kept[names[n]] for n in names if n not in missed})
    if lost:
        art.warnings.append(f"int8-mixed: no integer op computes {', '.join(lost)} in the int8 file "
                            "(folded into a neighbour, or float already): nothing to keep")
    art.details["kept_layers"] = list(kept.values())
    art.details["kept_precision"] = "float32"


def _public(outputs: dict[str, list[str]], tensors: dict) -> set[str]:
    """The TFLite names of the ONNX graph's tensors (onnx2tf's correspondence report, or the same name)."""
    return {tensors.get(o, o) for names in outputs.values() for o in names if o} | set(tensors.values())


class _Nodes:
    """What `named_layers` reads of an ONNX model (node names, in order) from a {node: outputs} map."""

    def __init__(self, outputs: dict[str, list[str]]):
        from types import SimpleNamespace

        self.graph = SimpleNamespace(node=[SimpleNamespace(name=n) for n in outputs])


def _die_with_parent() -> None:
    """Linux: the quantizer dies with the stage that started it, as the stage dies with bridge."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "?"


def _bindings(req: LaneRequest, fp32: Path, plan: lay.InputPlan) -> IO:
    """How each source tensor appears in the float32 file: inputs from the plan (checked against the
    file), outputs from their shapes, and where a shape fits several layouts, from one probe sample."""
    runner = _signature_runner(fp32)
    ins, outs = runner.get_input_details(), runner.get_output_details()
    if sorted(ins) != sorted(s.name for s in req.inputs) or sorted(outs) != sorted(s.name for s in req.outputs):
        raise ConversionError(f"onnx2tf's signature has inputs {sorted(ins)} and outputs {sorted(outs)}; the hub "
                              f"has {[s.name for s in req.inputs]} and {[s.name for s in req.outputs]}",
                              stage="tflite-convert")
    inputs = []
    for spec in req.inputs:
        shape = tuple(int(d) for d in ins[spec.name]["shape_signature"])
        perm = plan.perms[spec.name]
        dyn = tuple(perm.index(a) if perm else a for a in spec.dynamic)
        scalar = not spec.shape and shape == (1,)  # onnx2tf writes a scalar input as [1] (TFLite has no rank 0)
        if not scalar and not lay.same_shape(shape, lay.permuted(spec.shape, perm), dyn):
            raise ConversionError(f"onnx2tf gave input {spec.name} shape {list(shape)}, expected "
                                  f"{list(lay.permuted(spec.shape, perm))}", stage="tflite-convert")
        inputs.append(Binding(spec.name, spec.name, shape, np.dtype(ins[spec.name]["dtype"]).name, perm,
                              plan.layouts[spec.name]))
    dynamic = _dynamic_outputs(req.hub_path, req.outputs)
    candidates = {s.name: lay.output_candidates(s, tuple(int(d) for d in outs[s.name]["shape_signature"]),
                                                dynamic.get(s.name, ())) for s in req.outputs}
    perms = {n: c[0] for n, c in candidates.items()}
    ambiguous = [n for n, c in candidates.items() if len(c) > 1]
    if ambiguous:
        perms.update(_probe(req, runner, inputs, {n: candidates[n] for n in ambiguous}))
    outputs = tuple(Binding(s.name, s.name, tuple(int(d) for d in outs[s.name]["shape_signature"]),
                            np.dtype(outs[s.name]["dtype"]).name, perms[s.name],
                            "channel-last" if perms[s.name] else "source") for s in req.outputs)
    return IO(tuple(inputs), outputs)


def _probe(req: LaneRequest, runner, inputs: list[Binding], candidates: dict[str, list]) -> dict[str, tuple | None]:
    """Decide the layout of outputs whose shape fits several by running one sample through the hub
    (onnxruntime) and the file: a wrong guess on a C == H == W output is rel. L2 0.35, not a shape error."""
    ort = require("onnxruntime")
    feed = _probe_feed(req)
    session = ort.InferenceSession(req.hub_path, providers=["CPUExecutionProvider"])
    expected = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed), strict=True))
    got = runner(**{b.name: b.to_artifact(feed[b.name]) for b in inputs})
    return {n: lay.choose_by_values(n, c, np.asarray(got[n]), np.asarray(expected[n])) for n, c in candidates.items()}


def _probe_feed(req: LaneRequest) -> dict[str, np.ndarray]:
    if req.calibration:
        return {s.name: np.ascontiguousarray(req.calibration[0][s.name]) for s in req.inputs}
    rng = np.random.default_rng(0)
    return {s.name: (rng.standard_normal(s.shape) if np.dtype(s.dtype).kind == "f" else np.zeros(s.shape))
            .astype(s.dtype) for s in req.inputs}


def _dynamic_outputs(hub_path: str, outputs: tuple[TensorSpec, ...]) -> dict[str, tuple[int, ...]]:
    """Each hub output's axes whose size the graph does not fix to the one the source gave: those
    without a fixed size in the graph's output type (a dynamic input's), and those declared at
    another size, whose size depends on input values (Range's length on its `start`: onnx's
    test_range_float_type_positive_delta declares [2], a start of 0.1 makes 3). onnx2tf writes the
    declared size into the file's signature, while the kernel computes the real one; parity judges
    the values, and their shape, on the samples."""
    onnx = require("onnx")
    graph = onnx.load(hub_path, load_external_data=False).graph
    measured = {s.name: s.shape for s in outputs}
    found = {}
    for o in graph.output:
        dims, shape = o.type.tensor_type.shape.dim, measured.get(o.name)
        found[o.name] = tuple(i for i, d in enumerate(dims) if d.dim_value <= 0 or
                              (shape is not None and len(shape) == len(dims) and d.dim_value != shape[i]))
    return found


def _signature_runner(path: Path):
    """The file's signature on the runtime's own kernels, without XNNPACK: the lane reads the file
    and probes layouts here; whether the file runs on the default delegate, as on a phone, is the
    parity stage's verdict (XNNPACK refuses to resize some graphs with dynamic shapes)."""
    litert = require("ai_edge_litert.interpreter")
    plain = litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    return litert.Interpreter(model_path=str(path), experimental_op_resolver_type=plain).get_signature_runner()


def _read_io(path: Path, io_float: IO) -> IO:
    """The artifact's real I/O dtypes and quantization, read back from the file."""
    runner = _signature_runner(path)
    details_in, details_out = runner.get_input_details(), runner.get_output_details()

    def read(b: Binding, details: dict) -> Binding:
        d = details.get(b.artifact_name)
        if d is None:
            raise ConversionError(f"the TFLite signature lost tensor {b.name}", stage="tflite-convert")
        scale, zero = d["quantization"]
        quant = (float(scale), int(zero)) if scale else None
        return Binding(b.name, b.artifact_name, b.shape, np.dtype(d["dtype"]).name, b.perm, b.layout, quant)

    return IO(tuple(read(b, details_in) for b in io_float.inputs),
              tuple(read(b, details_out) for b in io_float.outputs))
