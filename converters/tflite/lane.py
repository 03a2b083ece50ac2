"""ONNX hub -> TFLite: one onnx2tf run, then one TFLiteConverter pass per requested mode.

onnx2tf's options are set deliberately:
- `disable_model_save=True`: we take its Keras model and run the converter ourselves, once per mode,
  instead of letting it write a SavedModel, .h5 and fp32/fp16 files we would not ship.
- `output_signaturedefs=True`: its CLI default; the Python API's False breaks models with some op
  names.
- `not_use_onnxsim=True`: the hub graph is already simplified (onnxslim); simplifying twice costs
  time on large models and changes nothing onnx2tf relies on.
- strict mode and its validation-by-dummy-inference stay on. That inference reads sample images
  from the working directory (and downloads them if absent): it runs in a scratch folder where we
  put our own samples, so it never reaches the network.
- never `copy_onnx_input_output_names_to_tflite` (it runs flatc and curl): our converter pass names
  the signature's inputs and outputs after the ONNX graph instead.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import time
from pathlib import Path

import numpy as np

from bridge.base.bindings import IO, Binding
from bridge.base.errors import ConversionError, one_line
from bridge.base.lane import LaneArtifact, LaneRequest, for_each_mode
from bridge.base.lazy import require
from bridge.base.modes import ModeSpec
from bridge.converters.tflite import LANE
from bridge.converters.tflite import layout as lay
from bridge.converters.tflite.flatbuffer import flex_ops, op_counts
from bridge.converters.tflite.modes import ModeConfig
from bridge.converters.tflite.quantize import make_converter

SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"


def convert(req: LaneRequest) -> list[LaneArtifact]:
    """Entry point of the `tflite-convert` stage. One failing mode never stops the others."""
    tf = require("tensorflow")
    start = time.perf_counter()
    keras_model, plan, applied = _onnx2tf(req)
    io_float = _bindings(req, keras_model, plan)
    concrete = _concrete_function(tf, keras_model, io_float)
    warnings = [f"ONNX rewritten before onnx2tf: {', '.join(applied)}"] if applied else []

    def make(mode_name: str, art: LaneArtifact) -> None:
        mode = LANE.mode(mode_name)
        art.warnings += warnings
        buf, mode_warnings = _convert_mode(tf, concrete, mode, io_float, req)
        counts = op_counts(buf)
        flex = flex_ops(counts)
        art.details.update({"ops": dict(sorted(counts.items())), "flex_ops": flex})
        if flex and not req.options.allow_flex:
            raise ConversionError(f"needs Flex (Select TF) ops {', '.join(flex)}, which stock TFLite "
                                  "runtimes reject; pass --allow-flex to ship them anyway", stage="tflite-convert")
        path = Path(req.workdir) / f"{req.name}_{mode.name}.tflite"
        path.write_bytes(buf)
        art.path = str(path)
        art.io = _read_io(tf, buf, io_float)
        art.warnings += mode_warnings

    return for_each_mode(req.modes, make, stage="tflite-convert", route=("onnx", "onnx2tf", "tflite-converter"),
                         shared_seconds=time.perf_counter() - start)


def _onnx2tf(req: LaneRequest):
    onnx = require("onnx")
    onnx2tf = require("onnx2tf")
    from bridge.converters.tflite.rewrites import apply_rewrites

    model = onnx.load(req.hub_path)
    applied = apply_rewrites(model)
    plan = lay.plan_inputs(req.inputs, req.framework, req.options.layout)
    scratch = Path(req.workdir) / "onnx2tf"
    scratch.mkdir(parents=True, exist_ok=True)
    np.save(scratch / SAMPLE_FILE, _sample_images(req))
    log = io.StringIO()
    cwd = os.getcwd()
    try:
        os.chdir(scratch)
        with contextlib.redirect_stdout(log):
            keras_model = onnx2tf.convert(
                onnx_graph=model,
                output_folder_path=str(scratch / "saved_model"),
                disable_model_save=True,
                output_signaturedefs=True,
                not_use_onnxsim=True,
                keep_ncw_or_nchw_or_ncdhw_input_names=list(plan.keep_channel_first) or None,
                keep_nwc_or_nhwc_or_ndhwc_input_names=list(plan.keep_channel_last) or None,
                non_verbose=True,
                verbosity="error",
            )
    except (Exception, SystemExit) as e:  # onnx2tf raises anything, or exits
        raise _onnx2tf_error(e, log.getvalue(), req.node_names) from None
    finally:
        os.chdir(cwd)
    return keras_model, plan, applied


def _sample_images(req: LaneRequest) -> np.ndarray:
    """Images for onnx2tf's own validation run: our calibration samples of the first 3-channel
    image input, channel-last, scaled to 0..1 as onnx2tf expects; seeded noise otherwise."""
    channel_last = req.framework in ("keras", "tensorflow")
    images = [s for s in req.inputs if lay.is_image(s, channel_last)]
    if images and req.calibration:
        name = images[0].name
        batch = np.concatenate([f[name] for f in req.calibration[:20]]).astype(np.float32)
        batch = batch if channel_last else batch.transpose(0, 2, 3, 1)
        if batch.shape[-1] == 3:
            lo, hi = float(batch.min()), float(batch.max())
            return (batch - lo) / (hi - lo or 1.0)
    return np.random.default_rng(0).random((20, 128, 128, 3), dtype=np.float32)


def _onnx2tf_error(e: BaseException, log: str, node_names: dict[str, str]) -> ConversionError:
    node = _last(r"onnx_op_name:\s*(\S+)", log)
    op_type = _last(r"onnx_op_type:\s*(\S+)", log)
    node = node_names.get(node, node) if node else None
    message = one_line(e, pick="last", limit=300)  # onnx2tf logs its trace first, the error last
    where = f" at {op_type} node {node}" if node else ""
    return ConversionError(f"onnx2tf failed{where}: {message}", stage="tflite-convert",
                           node=node, op_type=op_type)


def _last(pattern: str, text: str) -> str | None:
    found = re.findall(pattern, re.sub(r"\x1b\[[0-9;]*m", "", text))
    return found[-1] if found else None


def _safe(name: str) -> str:
    """Signature keys must be TensorFlow identifiers."""
    s = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return s if re.match(r"[A-Za-z]", s) else f"t_{s}"


def _dynamic_outputs(hub_path: str) -> dict[str, tuple[int, ...]]:
    """Each hub output's dynamic axes: those without a fixed size in the graph's output type."""
    onnx = require("onnx")
    graph = onnx.load(hub_path, load_external_data=False).graph
    return {o.name: tuple(i for i, d in enumerate(o.type.tensor_type.shape.dim) if d.dim_value <= 0)
            for o in graph.output}


def _bindings(req: LaneRequest, keras_model, plan: lay.InputPlan) -> IO:
    if len(keras_model.inputs) != len(req.inputs) or len(keras_model.outputs) != len(req.outputs):
        raise ConversionError("onnx2tf changed the number of inputs or outputs", stage="tflite-convert")
    inputs = []
    for spec, tensor in zip(req.inputs, keras_model.inputs, strict=True):
        tf_shape = tuple(tensor.shape)
        perm = plan.perms[spec.name]
        dyn = tuple(perm.index(a) if perm else a for a in spec.dynamic)
        if not lay.same_shape(tf_shape, lay.permuted(spec.shape, perm), dyn):
            raise ConversionError(f"onnx2tf gave input {spec.name} shape {list(tf_shape)}, expected "
                                  f"{list(lay.permuted(spec.shape, perm))}", stage="tflite-convert")
        inputs.append(Binding(spec.name, _safe(spec.name), tuple(-1 if d is None else d for d in tf_shape),
                              tensor.dtype.name, perm, plan.layouts[spec.name]))
    layouts = getattr(keras_model, "onnx_output_layouts", {}) or {}
    dynamic = _dynamic_outputs(req.hub_path) if any(s.dynamic for s in req.inputs) else {}
    outputs = []
    for spec, tensor in zip(req.outputs, keras_model.outputs, strict=True):
        tf_shape = tuple(tensor.shape)
        perm = lay.output_perm(spec, tf_shape, bool(layouts.get(spec.name)), dynamic.get(spec.name, ()))
        outputs.append(Binding(spec.name, _safe(spec.name), tuple(-1 if d is None else d for d in tf_shape),
                               tensor.dtype.name, perm, "channel-last" if perm else "source"))
    return IO(tuple(inputs), tuple(outputs))


def _concrete_function(tf, keras_model, io_float: IO):
    """The model as one frozen function, signature named after the ONNX graph.

    Weights are folded into constants once, so no converter pass has variables to freeze: on
    EfficientNetB0 a pass takes 2 s instead of 32 s, which TensorFlow spent writing and reading
    back a SavedModel of the variables for every pass. The frozen graph is wrapped in a variable-
    free module because the converter only writes a signature (our input and output names) for
    functions that come with one.
    """
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    specs = [tf.TensorSpec([None if d < 0 else d for d in b.shape], b.dtype, name=b.artifact_name)
             for b in io_float.inputs]
    out_names = [b.artifact_name for b in io_float.outputs]

    @tf.function(input_signature=specs)
    def traced(*args):
        outs = keras_model(list(args) if len(args) > 1 else args[0])
        return list(outs) if isinstance(outs, (list, tuple)) else [outs]

    frozen = convert_variables_to_constants_v2(traced.get_concrete_function())

    @tf.function(input_signature=specs)
    def serve(*args):
        return dict(zip(out_names, frozen(*args), strict=True))

    holder = tf.Module()
    holder.serve = serve
    return serve.get_concrete_function(), holder


def _convert_mode(tf, concrete, mode: ModeSpec, io_float: IO, req: LaneRequest) -> tuple[bytes, list[str]]:
    cfg: ModeConfig = mode.config
    calibration = req.calibration

    def representative():
        for feed in calibration:
            yield [b.to_artifact(feed[b.name]).astype(b.dtype) for b in io_float.inputs]

    if mode.calibrated and not calibration:
        raise ConversionError(f"{mode.name} needs calibration samples", stage="tflite-convert")
    representative = representative if mode.calibrated else None
    warnings = []
    try:
        conv = make_converter(tf, *concrete, cfg, representative, allow_select=True,
                              allow_float=cfg.float_fallback)
        return conv.convert(), warnings
    except Exception as first:  # the TF converter raises ConverterError or RuntimeError
        if cfg.ops == "builtins" or cfg.float_fallback:
            raise ConversionError(f"TFLite converter failed for {mode.name}: {_brief(first)}",
                                  stage="tflite-convert") from None
        # A full-integer conversion failed on an op with no integer kernel: retry with float
        # kernels admitted, and say so.
        try:
            conv = make_converter(tf, *concrete, cfg, representative, allow_select=True,
                                  allow_float=True)
            buf = conv.convert()
        except Exception as second:  # noqa: BLE001 - same converter, reported the same way
            raise ConversionError(f"TFLite converter failed for {mode.name}: {_brief(second)}",
                                  stage="tflite-convert") from None
        warnings.append(f"{mode.name}: some ops have no integer kernel and stay float ({_brief(first)})")
        return buf, warnings


def _brief(e: BaseException) -> str:
    """TensorFlow's converter marks its own message with "error:" among pages of MLIR dumps."""
    return one_line(e, pick="first", prefer="error:", limit=300)


def _read_io(tf, buf: bytes, io_float: IO) -> IO:
    """The artifact's real I/O dtypes and quantization, read back from the file."""
    interp = tf.lite.Interpreter(model_content=buf)
    runner_in = interp.get_signature_runner().get_input_details()
    runner_out = interp.get_signature_runner().get_output_details()

    def read(b: Binding, details: dict) -> Binding:
        d = details.get(b.artifact_name)
        if d is None:
            raise ConversionError(f"the TFLite signature lost tensor {b.name}", stage="tflite-convert")
        scale, zero = d["quantization"]
        quant = (float(scale), int(zero)) if scale else None
        return Binding(b.name, b.artifact_name, b.shape, np.dtype(d["dtype"]).name, b.perm, b.layout, quant)

    return IO(tuple(read(b, runner_in) for b in io_float.inputs),
              tuple(read(b, runner_out) for b in io_float.outputs))


