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
