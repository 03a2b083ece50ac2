"""The calibrated modes: ai-edge-litert's quantizer on the float32 file, integer kernels throughout.

The quality bar for calibrated modes needs trained weights (tests/e2e/test_convert_tflite.py runs
the trained samples); here a small random CNN shows the structure of each mode's file and that it
still computes the float file's function."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.base.errors import ConversionError
from bridge.converters.tflite import flatbuffer as fbu
from bridge.converters.tflite.modes import config
from bridge.converters.tflite.quantize import calibrate, compact
from tests.converters.tflite.helpers import cnn, images, run, snr_db, tensor_types, to_tflite


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    return to_tflite(cnn(), tmp_path_factory.mktemp("quantize"))


def _quantized(fp32, tmp_path, mode: str):
    path = tmp_path / f"{mode}.tflite"
    cfg = config(mode)
    path.write_bytes(calibrate(str(fp32), ([x] for x in images(16, seed=7)), mode, cfg.float_fallback))
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
