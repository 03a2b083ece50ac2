"""Bias correction for calibrated int16x8 files: the mean error that rounding a layer's weights to
int8 adds to its outputs, taken back out of its integer bias.

Rounding each weight to the nearest int8 step adds an error dW per weight. Over real inputs the
layer's output then shifts by sum(dW * x) per output channel, and the shift has a mean that does
not average out: the expected input under each kernel tap times dW. That mean is measured on the
calibration samples (the float file run once per sample, beside the calibrator) and subtracted
from the bias: the empirical bias correction of Nagel et al., "Data-Free Quantization Through
Weight Equalization and Bias Correction" (ICCV 2019), with the input means taken from
data instead of from batch-norm statistics.

Why int16x8 only: measured on the trained samples, it helps int16x8 (MobileNetV2-class 38.224 ->
38.528 dB, TensorFlow's converter 38.228; shapes_cnn 37.403 -> 37.818) and not int8 (MobileNetV2
32.874 -> 31.125), whose int8 activations add an error of their own. The int8 modes stay as
TensorFlow writes them, bit for bit (`quantize.compact`).

Guarded (`choose`): on trained zoo models the correction lowered held-out SNR as well as raising
it (NOTES-issue12.md), so the corrected file replaces the plain one only when its outputs are
closer to the float file's on the calibration samples (the quantizer's own data, never the parity
samples); the decision and both figures go into the artifact's details.

Why not match TensorFlow's int16x8 file instead: ai-edge-litert's quantizer writes TensorFlow's
file byte for byte from the same calibration ranges; the ranges themselves differ in the last
float32 bit, from the two builds' float kernels (NOTES-issue12.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from bridge.base.lazy import require
from bridge.converters.tflite import flatbuffer as fbu

LAYERS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


@dataclass(frozen=True)
class Layer:
    """A float layer whose bias can absorb its weights' rounding error."""

    kind: str  # one of LAYERS
    input: int  # the input activation's tensor index in the float file
    weights: str  # constant tensor names, kept by the quantizer
    bias: str
    values: np.ndarray  # the float weights, as the file stores them
    options: object  # the op's builtin options (padding, strides, dilations)


class InputMeans:
    """Each layer's mean input under each kernel tap, over the samples given to `add`.

    The float file runs on ai-edge-litert with the layers' inputs made graph outputs, so they
    survive the run (an interpreter reuses an activation's memory once it is read)."""

    def __init__(self, fp32: bytes):
        model = fbu.load(fp32)
        self.layers = _layers(model)
        sg = model.subgraphs[0]
        sg.outputs = list(sg.outputs) + sorted({layer.input for layer in self.layers} - set(sg.outputs))
        self._run = _Runner(fbu.save(model))
        self._sums: list[np.ndarray | None] = [None] * len(self.layers)
        self.count = 0

    def add(self, arrays: Sequence[np.ndarray]) -> None:
        self._run.invoke(arrays)
        for i, layer in enumerate(self.layers):
            m = _tap_means(layer, self._run.tensor(layer.input))
            self._sums[i] = m if self._sums[i] is None else self._sums[i] + m
        self.count += 1

    def correct(self, buf: bytes) -> bytes:
        """The quantized file `buf` with each layer's integer bias moved by its mean rounding error."""
        if self.count == 0:
            return buf
        model = fbu.load(buf)
        named = {_name(t): t for t in model.subgraphs[0].tensors}
        users = fbu.buffer_users(model)
        types = fbu.schema().TensorType
        for layer, total in zip(self.layers, self._sums, strict=True):
            w, b = named.get(layer.weights), named.get(layer.bias)
            if w is None or b is None or w.type != types.INT8 or b.type not in (types.INT32, types.INT64) \
                    or users[b.buffer] != 1 or tuple(w.shape) != layer.values.shape:
                continue  # left float, or a bias another tensor shares
            shift = _shift(layer, fbu.dequantized(model, w, np.float64) - layer.values, total / self.count)
            scale = np.asarray(b.quantization.scale, np.float64)
            dtype = np.int32 if b.type == types.INT32 else np.int64
            old = fbu.constant(model, b).view(dtype)
            steps = np.round(shift / np.where(scale > 0, scale, np.inf))
            limit = np.iinfo(dtype).max
            new = np.clip(old.astype(np.float64) - steps, -limit, limit).astype(dtype)
            model.buffers[b.buffer].data = np.frombuffer(new.tobytes(), np.uint8)
        return fbu.save(model)


def _name(tensor) -> str:
    return tensor.name.decode() if isinstance(tensor.name, bytes) else tensor.name


def _layers(model) -> list[Layer]:
    """The first subgraph's conv and dense layers with constant float weights and bias, each
    weight read by that layer only, and an input they read whole (no grouped CONV_2D)."""
    sg = model.subgraphs[0]
    types = fbu.schema().TensorType
    readers: dict[int, int] = {}
    for op in sg.operators:
        for i in op.inputs if op.inputs is not None else ():
            readers[i] = readers.get(i, 0) + 1
    found = []
    for op in sg.operators:
        kind = fbu.code_name(model.operatorCodes[op.opcodeIndex])
        if kind not in LAYERS or op.inputs is None or len(op.inputs) < 3 or min(op.inputs[:3]) < 0:
            continue
        x, w, b = (sg.tensors[i] for i in op.inputs[:3])
        data = fbu.constant(model, w)
        if data is None or fbu.constant(model, b) is None or w.type != types.FLOAT32 \
                or readers[op.inputs[1]] != 1 or x.shape is None or not len(x.shape):
            continue
        values = data.view("<f4").reshape(tuple(w.shape)).astype(np.float64)
        channels = int(x.shape[-1])
        if (kind == "CONV_2D" and (len(x.shape) != 4 or values.shape[3] != channels)) or \
                (kind == "DEPTHWISE_CONV_2D" and (len(x.shape) != 4 or values.shape[3] % channels)) or \
                (kind == "FULLY_CONNECTED" and (values.ndim != 2 or values.shape[1] != channels)):
            continue
        found.append(Layer(kind, op.inputs[0], _name(w), _name(b), values, op.builtinOptions))
    return found


def _tap_means(layer: Layer, x: np.ndarray) -> np.ndarray:
    """The mean of `x` under each kernel tap over every output position: [KH, KW, C] for a conv
    (zero padding counted, as the kernel reads it), [C] for a dense layer."""
    x = np.asarray(x, np.float64)
    if layer.kind == "FULLY_CONNECTED":
        return x.reshape(-1, x.shape[-1]).mean(axis=0)
    kh, kw = layer.values.shape[1:3]
    o = layer.options
    rows, top = _axis(x.shape[1], kh, o.strideH, o.dilationHFactor, o.padding)
    cols, left = _axis(x.shape[2], kw, o.strideW, o.dilationWFactor, o.padding)
    padded = np.pad(x, ((0, 0), top, left, (0, 0)))
    out = np.empty((kh, kw, x.shape[3]))
    for i in range(kh):
        for j in range(kw):
            r, c = i * o.dilationHFactor, j * o.dilationWFactor
            rows_read = slice(r, r + (rows - 1) * o.strideH + 1, o.strideH)
            window = padded[:, rows_read, c: c + (cols - 1) * o.strideW + 1: o.strideW]
            out[i, j] = window.mean(axis=(0, 1, 2))
    return out


def _axis(size: int, kernel: int, stride: int, dilation: int, padding: int) -> tuple[int, tuple[int, int]]:
    """Output length and (before, after) zero padding along one axis, as TFLite's kernels pad."""
    span = (kernel - 1) * dilation + 1
    if padding == fbu.schema().Padding.SAME:
        out = -(-size // stride)
        total = max((out - 1) * stride + span - size, 0)
        return out, (total // 2, total - total // 2)
    return (size - span) // stride + 1, (0, 0)


def _shift(layer: Layer, error: np.ndarray, means: np.ndarray) -> np.ndarray:
    """The mean output shift per output channel: each weight's rounding error times its input's mean."""
    if layer.kind == "FULLY_CONNECTED":  # [out, in]
        return error @ means
    if layer.kind == "CONV_2D":  # [out, kh, kw, in]
        return np.einsum("ohwc,hwc->o", error, means)
    multiplier = error.shape[3] // means.shape[2]  # depthwise [1, kh, kw, in * multiplier]
    return np.einsum("hwo,hwo->o", error[0], np.repeat(means, multiplier, axis=2))


@dataclass(frozen=True)
class Decision:
    """Whether the corrected biases were kept, from each file's SNR against the float file on the
    calibration samples (worst output, pooled over samples, as the parity report pools them)."""

    applied: bool
    plain_snr_db: float
    corrected_snr_db: float
    samples: int

    def to_json(self) -> dict:
        def db(x: float) -> float | None:
            return round(x, 4) if math.isfinite(x) else None

        return {"applied": self.applied, "samples": self.samples,
                "calibration_snr_db": {"plain": db(self.plain_snr_db), "corrected": db(self.corrected_snr_db)}}


def choose(fp32: bytes, plain: bytes, corrected: bytes,
           samples: Iterable[Sequence[np.ndarray]]) -> tuple[bytes, Decision]:
    """`corrected` if its outputs are strictly closer to `fp32`'s than `plain`'s on `samples`, else
    `plain`. An output that is Inf counts as -inf dB; a NaN, or a float output that is not finite,
    keeps `plain`."""
    runs = [_Runner(b) for b in (fp32, plain, corrected)]
    err = ref = None
    count = 0
    for arrays in samples:
        want, *got = (r(arrays) for r in runs)
        ref_now = np.array([np.sum(np.square(w)) for w in want])
        err_now = np.array([[np.sum(np.square(g - w)) for g, w in zip(outs, want, strict=True)] for outs in got])
        ref, err = (ref_now, err_now) if ref is None else (ref + ref_now, err + err_now)
        count += 1
    if count == 0:
        return plain, Decision(False, math.nan, math.nan, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = 10 * np.log10(ref / err)  # [file, output]; an exact output is +inf
    worst = [float(np.min(s)) for s in snr]
    applied = bool(np.isfinite(ref).all() and not np.isnan(worst).any() and worst[1] > worst[0])
    return (corrected if applied else plain), Decision(applied, worst[0], worst[1], count)


class _Runner:
    """A file on ai-edge-litert, its outputs in graph order as float64, sized to the first sample."""

    def __init__(self, buf: bytes):
        interpreter = require("ai_edge_litert.interpreter")
        self._buf = buf  # the interpreter reads these bytes in place
        self._run = interpreter.Interpreter(model_content=buf, num_threads=1)
        self._sized = False

    def __call__(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        self.invoke(arrays)
        return [self.tensor(d["index"]).astype(np.float64) for d in self._run.get_output_details()]

    def invoke(self, arrays: Sequence[np.ndarray]) -> None:
        run = self._run
        inputs = run.get_input_details()
        if not self._sized:
            for detail, a in zip(inputs, arrays, strict=True):
                run.resize_tensor_input(detail["index"], list(a.shape))
            run.allocate_tensors()
            self._sized = True
        for detail, a in zip(inputs, arrays, strict=True):
            run.set_tensor(detail["index"], a)
        run.invoke()

    def tensor(self, index: int) -> np.ndarray:
        return self._run.get_tensor(index)
