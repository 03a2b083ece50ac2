"""How each TFLite mode is made from the one float32 file onnx2tf writes. Modes are data: the
lane's table (`modes.MODES`) says, per mode, which rewrite or quantizer makes it and with what types.

- fp32: onnx2tf's file as it is.
- fp16: float16 weights behind DEQUANTIZE, float32 compute (`fp16.float16_weights`).
- dynamic-int8: int8 weights for hybrid kernels (`dynamic.dynamic_int8`).
- int8, int8-io, int16x8: calibrated by ai-edge-litert's own post-training quantizer
  (`_pywrap_tensorflow_lite_calibration_wrapper`: TFLite's calibrator, which runs the float model on
  our samples and records each tensor's range, and its quantizer, which writes integer kernels).
  It is the quantizer TensorFlow's converter shipped before its MLIR one (and the one it still uses
  for int16x8), and needs no TensorFlow. int16x8 then has its biases corrected for the int8
  weights' mean rounding error (`bias.InputMeans`), kept only where that brings its outputs closer
  to the float file's on the calibration samples (`bias.choose`).

Not used, and why (measured, NOTES-issue12.md): onnx2tf 2.x's own quantized outputs (dynamic range
at -5 dB SNR, per-channel integer failing its own validation, per-tensor int8 at 10-13 dB);
ai-edge-quantizer (every release pins an ai-edge-litert other than onnx2tf's 2.1.2); a TFLite
converter pass through TensorFlow (what 1.x needed: 3-10x slower, and TensorFlow in the lane).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from bridge.base.errors import ConversionError
from bridge.base.lazy import require
from bridge.converters.tflite import flatbuffer as fbu
from bridge.converters.tflite.bias import InputMeans, choose
from bridge.converters.tflite.modes import config

# activations -> (activation dtype, bias dtype), as TFLite's integer kernels take them
_TYPES = {"int8": (np.int8, np.int32), "int16": (np.int16, np.int64)}


@dataclass(frozen=True)
class Calibrated:
    """A calibrated file, and for a bias-corrected mode whether its correction was kept and why
    (`bias.Decision.to_json`, the artifact's `bias_correction` detail)."""

    data: bytes
    bias_correction: dict | None = None


def calibrate(fp32_path: str, samples: Iterable[Sequence[np.ndarray]], mode: str, allow_float: bool) -> Calibrated:
    """A calibrated integer model from the float32 file at `fp32_path`.

    `samples`: the float32 file's inputs for each calibration sample, in its input order and
    layout; a mode with bias correction reads them twice (a one-shot iterator is listed first).
    Runs in a child process of its own (`calibrate_in_file`): the quantizer aborts the process on
    some graphs (seen: a ViT in int16x8).
    """
    cw = require("ai_edge_litert._pywrap_tensorflow_lite_calibration_wrapper")
    cfg = config(mode)
    if cfg.bias_correction and iter(samples) is samples:
        samples = list(samples)
    act, bias = _TYPES[cfg.activations]
    io_type = act if cfg.integer_io else np.float32
    with open(fp32_path, "rb") as f:
        model = _saturated(f.read())  # the wrapper keeps a pointer into these bytes, not a reference: hold them
    wrapper = cw.CalibrationWrapper(model, [], [])
    means: InputMeans | None = None
    prepared = False
    for arrays in samples:
        if not prepared:
            wrapper.Prepare([list(a.shape) for a in arrays])  # the quantizer's own refusals come first
            prepared = True
            means = InputMeans(model) if cfg.bias_correction else None
        wrapper.FeedTensor(list(arrays))
        if means is not None:
            means.add(arrays)
    if not prepared:
        raise ConversionError(f"{mode} needs calibration samples", stage="tflite-convert")
    try:
        buf = wrapper.QuantizeModel(np.dtype(io_type).num, np.dtype(io_type).num, allow_float,
                                    np.dtype(act).num, np.dtype(bias).num, False, False)
    except RuntimeError as e:  # the quantizer's refusal, e.g. an op with no integer kernel
        raise ConversionError(_brief(e), stage="tflite-convert") from None
    del wrapper
    # int8 weights rounded as TensorFlow does (its files, bit for bit, for int8 activations; for
    # int16x8 the quantizer already rounds them as TensorFlow does: NOTES-issue12.md).
    out = compact(bytes(buf), model if cfg.activations == "int8" else None)
    if means is None:
        return Calibrated(out)
    # kept only where it brings the outputs closer to the float file's on these same samples
    chosen, decision = choose(model, out, means.correct(out), samples)
    return Calibrated(chosen, decision.to_json())


# What a float constant of float32's own scale (a mask's fill, -3.4e38 or -inf) becomes in the
# file the quantizer makes: finite, and far beyond anything it masks.
SATURATED = 1e4


def _saturated(model: bytes) -> bytes:
    """The float file with every float32 constant of magnitude 1e30 or more (or infinite) brought
    to +-SATURATED. An attention mask's fill (`Where(mask, scores, finfo.min)`, lowered by onnx2tf
    to `cond * x + (1 - cond) * -3.4e38`) gave its int8 tensors steps of 1.3e36, and ai-edge-litert
    aborts preparing the ops that combine them with ordinary ones (SIGABRT: all-MiniLM-L6-v2's int8
    file could not even load). An integer tensor holds no such value beside the values it masks
    either way: each saturates at the end of its range. Kept layers of `int8-mixed` read the
    float file's own constants (`mixed.keep_float`), unchanged."""
    m = fbu.load(model)
    changed = False
    for sg in m.subgraphs:
        for tensor in sg.tensors:
            data = fbu.constant(m, tensor)
            if data is None or tensor.type != fbu.schema().TensorType.FLOAT32:
                continue
            values = data.view("<f4")
            if np.any(np.abs(values) >= 1e30):  # inf too; NaN compares false and stays
                clipped = np.where(np.abs(values) >= 1e30, np.sign(values) * SATURATED, values).astype("<f4")
                m.buffers[tensor.buffer].data = np.frombuffer(clipped.tobytes(), np.uint8)
                changed = True
    return fbu.save(m) if changed else model


@dataclass(frozen=True)
class Job:
    """One calibrated mode, for the child process that makes it (`python -m` this module, the job as
    JSON): the float32 file, the calibration feeds on disk (`bridge.base.arrays.Feeds`, source layout),
    the file's inputs in order as (source name, permutation, dtype), and where to write."""

    fp32_path: str
    feeds: dict  # Feeds' fields
    order: list
    mode: str
    allow_float: bool
    out_path: str

    def run(self) -> None:
        import json

        from bridge.base.arrays import Feeds

        feeds = Feeds(self.feeds["folder"], tuple(self.feeds["names"]), self.feeds["length"])
        made = calibrate(self.fp32_path, _FileSamples(feeds, self.order), self.mode, self.allow_float)
        with open(self.out_path, "wb") as f:
            f.write(made.data)
        if made.bias_correction is not None:
            with open(details_path(self.out_path), "w") as f:
                json.dump({"bias_correction": made.bias_correction}, f)


def details_path(out_path: str) -> str:
    """Where the child leaves the file's details for the lane: beside the file."""
    return out_path + ".details.json"


class _FileSamples:
    """The calibration samples read from disk on each pass, in the float file's order and layout."""

    def __init__(self, feeds, order: list):
        self.feeds, self.order = feeds, order

    def __iter__(self):
        for feed in self.feeds:
            yield [_to_file(feed[name], perm, dtype) for name, perm, dtype in self.order]


def _to_file(x: np.ndarray, perm: tuple | None, dtype: str) -> np.ndarray:
    x = np.asarray(x).transpose(perm) if perm else np.asarray(x)
    return np.ascontiguousarray(x, dtype=dtype)


def compact(buf: bytes, fp32: bytes | None = None) -> bytes:
    """Tidy the quantizer's file; with `fp32` (the float file it was made from), round its int8
    weights again.

    - Drop the calibration min/max it leaves next to every scale (8 % of a MobileNetV2 int8 file;
      runtimes read only scale and zero point).
    - Give a tensor calibrated to the single value 0 a usable scale. Such a tensor (an additive
      attention mask fed all-ones masks) gets a zero or denormal scale (4.6e-41 seen), which
      XNNPACK refuses ("unsupported scale value"); every value it stores is the zero point, so any
      normal scale represents it exactly. An op's output takes the scale of the activation the op
      reads (`_dead_outputs`); one whose op reads no such activation, or that no op writes (a
      graph input), takes 1e-12.
    - With `fp32`, round each symmetric int8 weight as TensorFlow's converter does (`dynamic.round_to_int8`):
      the quantizer divides by the scale where TensorFlow multiplies by its reciprocal, and a few
      weights per layer land on the other side of .5. Same scales, same biases; MobileNetV2 int8
      on the same float file and calibration: 32.81 dB before, TensorFlow's 32.87 after.
    """
    model = fbu.load(buf)
    floats = _float_weights(fp32) if fp32 is not None else {}
    for sg in model.subgraphs:
        dead = set()
        for k, t in enumerate(sg.tensors):
            q = t.quantization
            if q is None or q.scale is None or not len(q.scale):
                continue
            q.min = None
            q.max = None
            scale = np.asarray(q.scale, dtype=np.float32)
            if np.any(scale < 1e-30):
                q.scale = np.where(scale < 1e-30, np.float32(1e-12), scale).tolist()
                if len(scale) == 1 and fbu.constant(model, t) is None:
                    dead.add(k)
            _reround(model, t, floats)
        _dead_outputs(model, sg, dead)
    _integer_pad_values(model)
    return fbu.save(model)


def _dead_outputs(model, sg, dead: set[int]) -> None:
    """Give each op output in `dead` (an activation calibrated to 0 alone) the scale of the first
    activation its op reads. XNNPACK creates a convolution, transposed convolution or fully
    connected operator only while input scale x weight scale / output scale is below 256
    (XNNPACK's src/operators: "requantization scale ... is greater or equal to 256.0"), and fails
    the whole delegate at runtime creation otherwise ("failed to create XNNPACK runtime"). An
    output scale of 1e-12 gave 1.7e8: onnx2tf writes a grouped ConvTranspose as one TRANSPOSE_CONV
    per group, so a channel the ReLU before it never opens on the calibration samples is a tensor
    of its own (14 of the 704 in the Cycle-CenterNet DLA-34), and the int8 file did not run with
    the default delegate. With its input's scale the ratio is the weight's scale; readers that
    requantize it (a QUANTIZE into the concatenation) see a scale of the graph's own magnitude.
    Ops are visited in order, so a dead tensor read by the next op has its scale already."""
    for op in sg.operators:
        read = [sg.tensors[k].quantization for k in op.inputs if k >= 0 and k not in dead
                and fbu.constant(model, sg.tensors[k]) is None]
        scales = [float(q.scale[0]) for q in read if q is not None and q.scale is not None and len(q.scale) == 1]
        for out in (k for k in op.outputs if k in dead and scales):
            sg.tensors[out].quantization.scale = [scales[0]]
            dead.discard(out)


_INTEGER = {"INT8": np.int8, "INT16": np.int16}


def _integer_pad_values(model) -> None:
    """Store each integer PADV2's pad value in its input's type. onnx2tf writes a padded MaxPool as
    PADV2 with a float32 pad value of -FLT_MAX, then MAX_POOL; the quantizer makes the PADV2's input
    and output int8 (or int16) but leaves that constant float32, and the runtime refuses the file
    ("op_context.input->type != op_context.constant_values->type"): every CNN with a padded
    MaxPool (the ResNet stems) failed in int8 and int16x8. The value is quantized as the output
    is (the kernel requires the pad value's scale and zero point to be the output's), saturating:
    -FLT_MAX becomes the type's least value, below every real value, as a max pool needs."""
    fb = fbu.schema()
    types = {v: k for k, v in vars(fb.TensorType).items() if not k.startswith("_")}
    for sg in model.subgraphs:
        for op in sg.operators:
            if fbu.code_name(model.operatorCodes[op.opcodeIndex]) != "PADV2" or len(op.inputs) < 3 \
                    or op.inputs[2] < 0:
                continue
            out, value = sg.tensors[op.outputs[0]], sg.tensors[op.inputs[2]]
            dtype = _INTEGER.get(types.get(out.type))
            data = fbu.constant(model, value)
            q = out.quantization
            if dtype is None or value.type != fb.TensorType.FLOAT32 or data is None or q is None \
                    or q.scale is None or len(q.scale) != 1:
                continue
            pad = float(data.view("<f4")[0])
            info = np.iinfo(dtype)
            zero = int(q.zeroPoint[0]) if q.zeroPoint is not None and len(q.zeroPoint) else 0
            stored = np.clip(np.round(np.clip(pad / float(q.scale[0]), -2.0**40, 2.0**40)) + zero, info.min, info.max)
            tensor = fb.TensorT()  # a tensor of its own: the float constant may have other readers
            tensor.shape, tensor.type = [], out.type
            tensor.name = (value.name or b"") + b"_" + types[out.type].lower().encode()
            tensor.buffer = fbu.add_buffer(model, np.asarray([stored], dtype=dtype))
            tensor.quantization = fb.QuantizationParametersT()
            tensor.quantization.scale, tensor.quantization.zeroPoint = [float(q.scale[0])], [zero]
            sg.tensors.append(tensor)
            op.inputs[2] = len(sg.tensors) - 1


def _float_weights(fp32: bytes) -> dict[str, np.ndarray]:
    """Name -> values of every float32 constant of the float file."""
    model = fbu.load(fp32)
    out = {}
    for sg in model.subgraphs:
        for t in sg.tensors:
            data = fbu.constant(model, t)
            if data is not None and t.type == fbu.schema().TensorType.FLOAT32:
                shape = tuple(t.shape) if t.shape is not None else ()
                out[t.name.decode() if isinstance(t.name, bytes) else t.name] = data.view("<f4").reshape(shape)
    return out


def _reround(model, tensor, floats: dict[str, np.ndarray]) -> None:
    """Round a symmetric int8 constant again from its float values, where the float file has them."""
    from bridge.converters.tflite.dynamic import round_to_int8

    name = tensor.name.decode() if isinstance(tensor.name, bytes) else tensor.name
    values, data = floats.get(name), fbu.constant(model, tensor)
    q = tensor.quantization
    shape = tuple(tensor.shape) if tensor.shape is not None else ()
    if values is None or data is None or tensor.type != fbu.schema().TensorType.INT8 \
            or q.zeroPoint is None or any(q.zeroPoint) or tuple(values.shape) != shape:
        return
    exact = round_to_int8(values, np.asarray(q.scale, np.float32), q.quantizedDimension)
    if exact.tobytes() != data.tobytes():
        model.buffers[tensor.buffer].data = np.frombuffer(exact.tobytes(), np.uint8)


def _brief(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return (lines[0] if lines else type(e).__name__)[:300]


def main(argv: Sequence[str]) -> int:
    """The quantizer's own process: exit 0 with the file written, 1 with the refusal on stderr's
    last line, or death by a signal where the quantizer aborts."""
    import json
    import sys

    try:
        Job(**json.loads(argv[1])).run()
    except ConversionError as e:
        sys.stderr.write(f"\nrefused: {e}\n")
        return 1
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv))
