"""The calibrated modes: ai-edge-litert's quantizer on the float32 file, integer kernels throughout.

The quality bar for calibrated modes needs trained weights (tests/e2e/test_convert_tflite.py runs
the trained samples); here a small random CNN shows the structure of each mode's file and that it
still computes the float file's function."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.base.errors import ConversionError
from bridge.converters.tflite import flatbuffer as fbu
from bridge.converters.tflite.bias import InputMeans
from bridge.converters.tflite.modes import config
from bridge.converters.tflite.quantize import calibrate, compact
from tests.converters.tflite.helpers import cnn, gated, images, run, snr_db, tensor_types, to_tflite


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    return to_tflite(cnn(), tmp_path_factory.mktemp("quantize"))


def _quantized(fp32, tmp_path, mode: str):
    path = tmp_path / f"{mode}.tflite"
    cfg = config(mode)
    path.write_bytes(calibrate(str(fp32), ([x] for x in images(16, seed=7)), mode, cfg.float_fallback).data)
    return path


def _float_compute(path) -> list[str]:
    """Ops that write a float activation, besides the DEQUANTIZE that hands the float output back."""
    model = fbu.load(path.read_bytes())
    fb = fbu.schema()
    found = set()
    for sg in model.subgraphs:
        for op in sg.operators:
            name = fbu.code_name(model.operatorCodes[op.opcodeIndex])
            if name != "DEQUANTIZE" and sg.tensors[op.outputs[0]].type == fb.TensorType.FLOAT32:
                found.add(name)
    return sorted(found)


@pytest.mark.parametrize(("mode", "activations", "bias"), [("int8", "INT8", "INT32"), ("int16x8", "INT16", "INT64")])
def test_calibrated_file_runs_integer_kernels(fp32, tmp_path, mode, activations, bias):
    path = _quantized(fp32, tmp_path, mode)
    types = tensor_types(path)
    assert types[activations] > 5 and types[bias] >= 3 and types["INT8"] >= 3  # weights int8 in both modes
    assert _float_compute(path) == []  # only the edges convert: QUANTIZE in, DEQUANTIZE out
    ops = fbu.op_counts(path.read_bytes())
    assert ops["QUANTIZE"] == 1 and ops["DEQUANTIZE"] == 1
    inputs = images(4)
    assert snr_db(run(path, inputs), run(fp32, inputs)) > (20 if mode == "int8" else 30)


def _layer(model, name: str, dtype) -> tuple[np.ndarray, np.ndarray]:
    """A constant tensor's stored values, dequantized, and its scales, by name."""
    [t] = [t for t in model.subgraphs[0].tensors if t.name.decode() == name]
    q = np.frombuffer(fbu.constant(model, t).tobytes(), dtype).reshape(tuple(t.shape)).astype(np.float64)
    scale = np.asarray(t.quantization.scale, np.float64)
    along = [1] * q.ndim
    along[t.quantization.quantizedDimension] = -1
    return q * scale.reshape(along), scale


def _conv_same(x: np.ndarray, w: np.ndarray, depthwise: bool) -> np.ndarray:
    """A 3x3 stride-1 zero-padded convolution in float64, channel-last: x [n, h, w, c],
    w [out, 3, 3, in] (depthwise: [1, 3, 3, c]); written out tap by tap."""
    n, h, wd, _ = x.shape
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = 0.0
    for i in range(3):
        for j in range(3):
            window = padded[:, i:i + h, j:j + wd, :]
            out = out + (window * w[0, i, j] if depthwise else np.einsum("nhwc,oc->nhwo", window, w[:, i, j, :]))
    return out


@pytest.mark.parametrize("mode", ["int8", "int16x8"])
def test_int16x8_biases_absorb_the_mean_weight_rounding_error(fp32, tmp_path, mode):
    """Each layer's integer bias in int16x8 is the float bias minus the mean output shift that its
    int8 weights' rounding causes on the calibration images (bias.py), computed here independently:
    the float network in numpy on the same images, each layer's whole error map conv(x, W_int8 - W)
    averaged. int8 keeps TensorFlow's plain bias (round(b / scale))."""
    from onnx import numpy_helper

    model = fbu.load(_quantized(fp32, tmp_path, mode).read_bytes())
    w = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in cnn().graph.initializer}
    x = np.concatenate(images(16, seed=7)).astype(np.float64)  # what _quantized calibrates on
    w1, w2 = w["w1"].transpose(0, 2, 3, 1), w["w2"].transpose(1, 2, 3, 0)  # OIHW -> the file's layouts
    r1 = np.maximum(_conv_same(x, w1, False) + w["b1"], 0)
    r2 = np.maximum(_conv_same(r1, w2, True) + w["b2"], 0)
    pooled = r2.mean(axis=(1, 2))
    bias_type = np.int64 if mode == "int16x8" else np.int32
    moved = []
    for filt, bias, b, shift in [
        ("conv1_conv_filter", "conv1_conv_bias", w["b1"], lambda e: _conv_same(x, e, False).mean(axis=(0, 1, 2))),
        ("depthwise_depthwise_filter", "depthwise_depthwise_bias", w["b2"],
         lambda e: _conv_same(r1, e, True).mean(axis=(0, 1, 2))),
        ("head_fc_weights", "head_fc_bias", w["b3"], lambda e: e @ pooled.mean(axis=0)),
    ]:
        weights, _ = _layer(model, filt, np.int8)
        error = weights - {"conv1_conv_filter": w1, "depthwise_depthwise_filter": w2, "head_fc_weights": w["w3"]}[filt]
        stored, scale = _layer(model, bias, bias_type)
        steps = shift(error) / scale
        if mode == "int16x8":  # within the quantizer's rounding and ours
            assert np.abs(stored / scale - (b / scale - steps)).max() <= 1.0
        else:
            assert np.abs(stored / scale - b / scale).max() <= 0.501
        moved.append(np.abs(steps).max())
    # the shifts are many bias steps, so the checks above tell a corrected bias from a plain one
    assert min(moved) > 100 if mode == "int16x8" else max(moved) > 10


def _plain_int16x8(fp32, samples) -> bytes:
    """The quantizer's int16x8 file before any bias correction, made here as `calibrate` makes it."""
    from ai_edge_litert import _pywrap_tensorflow_lite_calibration_wrapper as cw

    model = fp32.read_bytes()
    wrapper = cw.CalibrationWrapper(model, [], [])
    wrapper.Prepare([list(a.shape) for a in samples[0]])
    for arrays in samples:
        wrapper.FeedTensor(list(arrays))
    io, act, bias = (np.dtype(t).num for t in (np.float32, np.int16, np.int64))
    return compact(bytes(wrapper.QuantizeModel(io, io, True, act, bias, False, False)))


@pytest.mark.parametrize(("model", "helps"), [(cnn, True), (gated, False)], ids=["helps", "hurts"])
def test_int16x8_keeps_its_bias_correction_only_where_the_outputs_come_closer(tmp_path, model, helps):
    """The guard (`bias.choose`): the corrected file replaces the plain one only when its outputs are
    closer to the float file's on the calibration samples. Both candidate files are made here and
    measured with the tests' own SNR; the artifact's record must carry the same two figures."""
    fp32 = to_tflite(model(), tmp_path)
    samples = [[x] for x in images(16, seed=7)]
    made = calibrate(str(fp32), samples, "int16x8", True)
    plain = _plain_int16x8(fp32, samples)
    means = InputMeans(fp32.read_bytes())
    for arrays in samples:
        means.add(arrays)
    corrected = means.correct(plain)
    assert corrected != plain
    paths = {"plain": tmp_path / "plain.tflite", "corrected": tmp_path / "corrected.tflite"}
    paths["plain"].write_bytes(plain)
    paths["corrected"].write_bytes(corrected)
    xs = [x for [x] in samples]
    want = run(fp32, xs)
    snr = {k: snr_db(run(p, xs), want) for k, p in paths.items()}
    assert (snr["corrected"] > snr["plain"] + 0.1) == helps and abs(snr["corrected"] - snr["plain"]) > 0.1
    assert made.data == (corrected if helps else plain)
    record = made.bias_correction
    assert record["applied"] is helps and record["samples"] == 16
    for k in ("plain", "corrected"):
        assert record["calibration_snr_db"][k] == pytest.approx(snr[k], abs=1e-3)


def test_int8_io_takes_and_gives_int8(fp32, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    path = _quantized(fp32, tmp_path, "int8-io")
    runner = Interpreter(model_path=str(path)).get_signature_runner()
    [(_, x)], [(_, y)] = runner.get_input_details().items(), runner.get_output_details().items()
    assert x["dtype"] == np.int8 and y["dtype"] == np.int8 and x["quantization"][0] > 0
    assert "QUANTIZE" not in fbu.op_counts(path.read_bytes())
    inputs = images(4)
    assert snr_db(run(path, inputs), run(fp32, inputs)) > 20  # the runner quantizes and dequantizes at the edges


def test_calibration_ranges_are_dropped_and_zero_scales_made_usable(fp32, tmp_path):
    path = _quantized(fp32, tmp_path, "int8")
    model = fbu.load(path.read_bytes())
    params = [t.quantization for t in model.subgraphs[0].tensors if t.quantization and t.quantization.scale is not None]
    assert params and all(q.min is None and q.max is None for q in params)
    # a tensor calibrated to the single value 0 gets a denormal scale XNNPACK refuses
    params[0].scale = [4.6e-41]
    fixed = fbu.load(compact(fbu.save(model)))
    assert fixed.subgraphs[0].tensors[0].quantization.scale[0] >= 1e-30 or \
        all(s >= 1e-30 for t in fixed.subgraphs[0].tensors if t.quantization and t.quantization.scale is not None
            for s in t.quantization.scale)


def test_no_samples_no_calibrated_file(fp32):
    with pytest.raises(ConversionError, match="needs calibration samples"):
        calibrate(str(fp32), iter(()), "int8", False)


def _padded():
    """x [1, 3, 16, 16] -> conv 3x3 (8, no relu: negative values reach the pool) -> max pool 3x3
    stride 2 with pads -> Pad with the constant 0.75. onnx2tf writes the pool's pads as PADV2 with
    -FLT_MAX and the Pad as PADV2 with 0.75, both float32 constants in the float file."""
    from tests.converters.tflite.helpers import OPSET, TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([0, 0, 2, 1, 0, 0, 1, 2], np.int64), "pads"),
             numpy_helper.from_array(np.array(0.75, np.float32), "value")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("MaxPool", ["c"], ["m"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Pad", ["m", "pads", "value"], ["y"], mode="constant")]
    graph = helper.make_graph(nodes, "padded", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 11, 11])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)


@pytest.mark.parametrize("mode", ["int8", "int16x8"])
def test_padded_max_pool_and_constant_pad_run_in_integers(tmp_path, mode):
    """The quantizer left PADV2's pad value float32 beside an int8/int16 input, and ai-edge-litert
    refused the whole file ("INT8 != FLOAT32 ... PADV2 failed to prepare"): every CNN with a padded
    max pool (a ResNet stem). The pad value is stored in the output's type and quantization."""
    fp32 = to_tflite(_padded(), tmp_path)
    assert fbu.op_counts(fp32.read_bytes())["PADV2"] == 2
    path = _quantized(fp32, tmp_path, mode)
    model, fb = fbu.load(path.read_bytes()), fbu.schema()
    pads = [(sg, op) for sg in model.subgraphs for op in sg.operators
            if fbu.code_name(model.operatorCodes[op.opcodeIndex]) == "PADV2"]
    assert len(pads) == 2
    integer = fb.TensorType.INT8 if mode == "int8" else fb.TensorType.INT16
    for sg, op in pads:
        value, out = sg.tensors[op.inputs[2]], sg.tensors[op.outputs[0]]
        assert value.type == out.type == integer
        assert list(value.quantization.scale) == list(out.quantization.scale)
        assert list(value.quantization.zeroPoint) == list(out.quantization.zeroPoint)
    inputs = images(4)
    got, want = run(path, inputs), run(fp32, inputs)
    assert snr_db(got, want) > (30 if mode == "int8" else 45)
    assert want.shape == got.shape == (4, 8, 11, 11)
    assert np.all(want[:, :, :2, :] == 0.75)  # the Pad's first two rows
    step = max(float(sg.tensors[op.outputs[0]].quantization.scale[0]) for sg, op in pads)
    assert np.abs(got[:, :, :2, :] - 0.75).max() <= step / 2 * 1.001  # stored to the nearest step


def test_constants_of_float32s_own_scale_are_saturated_for_the_quantizer(tmp_path):
    """An attention mask's fill (finfo(float32).min, or -inf) reaches the quantizer as a float32
    constant; in all-MiniLM-L6-v2 it gave int8 tensors steps of 1.3e36 and ai-edge-litert aborted
    loading the file (SIGABRT, no message). The file handed to the quantizer holds +-1e4 instead;
    every other value stays as it was, bit for bit."""
    from bridge.converters.tflite.quantize import SATURATED, _saturated
    from tests.converters.tflite.helpers import OPSET, TensorProto, helper, numpy_helper

    fill = np.array([np.finfo(np.float32).min, -np.inf, np.inf, 1e30, -2.5, 0.0, 3e29], np.float32)
    inits = [numpy_helper.from_array(fill.reshape(1, 1, 1, 7), "fill")]
    nodes = [helper.make_node("Add", ["x", "fill"], ["y"])]
    graph = helper.make_graph(nodes, "fill", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 7])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 16, 7])], inits)
    fp32 = to_tflite(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8), tmp_path)
    before, after = fbu.load(fp32.read_bytes()), fbu.load(_saturated(fp32.read_bytes()))

    def constants(model):
        return {t.name: fbu.constant(model, t).view("<f4").copy() for sg in model.subgraphs for t in sg.tensors
                if fbu.constant(model, t) is not None and t.type == fbu.schema().TensorType.FLOAT32}

    was, now = constants(before), constants(after)
    (name,) = [n for n, v in was.items() if v.size == 7]
    assert now[name].tolist() == [-SATURATED, -SATURATED, SATURATED, SATURATED, -2.5, 0.0, np.float32(3e29)]
    assert all(np.array_equal(now[n], v) for n, v in was.items() if n != name)
    plain = to_tflite(cnn(), tmp_path / "plain")  # nothing to saturate: the very same bytes
    assert _saturated(plain.read_bytes()) == plain.read_bytes()


def _dead_channel_upsample(channels: int = 8, dead: int = 2):
    """x [1, 3, 16, 16] -> conv 3x3 -> relu -> depthwise ConvTranspose 4x4 stride 2 (CenterNet's
    upsampling) -> y [1, 8, 32, 32]. Channel `dead` of the conv is 0 before the relu opens it
    (zero weights, bias -1), as a pruned or never-firing channel of a trained network is. onnx2tf
    writes the grouped ConvTranspose as one TRANSPOSE_CONV per group, so that channel's output is
    a tensor of its own, calibrated to the single value 0."""
    from tests.converters.tflite.helpers import OPSET, TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    w = (rng.standard_normal((channels, 3, 3, 3)) * 0.3).astype(np.float32)
    b = (rng.standard_normal(channels) * 0.1).astype(np.float32)
    w[dead], b[dead] = 0.0, -1.0
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"),
             numpy_helper.from_array((rng.standard_normal((channels, 1, 4, 4)) * 0.3).astype(np.float32), "up_w")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("ConvTranspose", ["r", "up_w"], ["y"], group=channels, kernel_shape=[4, 4],
                              strides=[2, 2], pads=[1, 1, 1, 1], name="up")]
    graph = helper.make_graph(nodes, "up", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, 32, 32])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)


def test_a_dead_transposed_convolution_output_runs_with_the_default_delegate(tmp_path):
    """A tensor calibrated to 0 alone got the scale 1e-12; written by a TRANSPOSE_CONV that made a
    requantization scale (input x weight / output) of ~1e8, and XNNPACK creates such an operator
    only below 256: ai-edge-litert failed at "failed to create XNNPACK runtime" (the Cycle-CenterNet
    DLA-34's int8 file, node 1543). The output now takes its input's scale: the file runs with the
    default delegate, the dead channel is exactly 0 and the rest is int8-close to the float file."""
    fp32 = to_tflite(_dead_channel_upsample(), tmp_path)
    assert fbu.op_counts(fp32.read_bytes())["TRANSPOSE_CONV"] == 8
    path = _quantized(fp32, tmp_path, "int8")
    inputs = images(4)
    got, want = run(path, inputs), run(fp32, inputs)  # bridge's runner: XNNPACK, the default delegate
    assert np.all(want[..., 2] == 0) and np.all(got[..., 2] == 0)  # channel-last: the dead channel
    assert snr_db(got, want) > 30
    model = fbu.load(path.read_bytes())
    sg = model.subgraphs[0]
    ratios = []
    for op in sg.operators:
        if fbu.code_name(model.operatorCodes[op.opcodeIndex]) == "TRANSPOSE_CONV":
            x, w, y = (sg.tensors[k].quantization.scale for k in (op.inputs[2], op.inputs[1], op.outputs[0]))
            ratios.append(x[0] * max(w) / y[0])
    assert len(ratios) == 8 and max(ratios) < 256
