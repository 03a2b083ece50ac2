"""dynamic-int8: int8 per-channel weights for the runtime's hybrid kernels, made without calibration."""

from __future__ import annotations

import numpy as np

from bridge.converters.tflite import flatbuffer as fbu
from bridge.converters.tflite.dynamic import dynamic_int8, quantize_per_channel
from tests.converters.tflite.helpers import cnn, images, run, snr_db, to_tflite


def test_small_weights_stay_float(tmp_path):
    """Weights under 1024 elements (every one of this CNN's) stay float32, as in TensorFlow's converter:
    the file computes exactly what the float32 file does."""
    fp32 = to_tflite(cnn(), tmp_path)
    hybrid = tmp_path / "dynamic.tflite"
    hybrid.write_bytes(dynamic_int8(fp32.read_bytes()))
    model = fbu.load(hybrid.read_bytes())
    assert not [t for sg in model.subgraphs for t in sg.tensors if t.type == fbu.schema().TensorType.INT8]
    inputs = images(4)
    assert np.array_equal(run(hybrid, inputs), run(fp32, inputs))


def test_hybrid_file_runs_close_to_float(tmp_path):
    """A dense layer big enough to quantize (64 x 32 = 2048 weights)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((32, 64)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)], "dense",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 32])], [w])
    fp32 = to_tflite(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path)
    hybrid = tmp_path / "dynamic.tflite"
    hybrid.write_bytes(dynamic_int8(fp32.read_bytes()))
    model = fbu.load(hybrid.read_bytes())
    [weight] = [t for t in model.subgraphs[0].tensors if t.type == fbu.schema().TensorType.INT8]
    assert len(weight.quantization.scale) == 32 and weight.quantization.quantizedDimension == 0
    assert hybrid.stat().st_size < 0.5 * fp32.stat().st_size

    from bridge.validators.runners.tflite import TFLiteRunner

    x = rng.standard_normal((4, 64)).astype(np.float32)
    outputs = []
    for path in (fp32, hybrid):
        runner = TFLiteRunner()
        runner.load(str(path))
        outputs.append(runner.infer({"x": x})["y"])
    assert 25 < snr_db(outputs[1], outputs[0]) < 80  # int8 weights and activations at run time: close, not equal


def test_per_channel_rounding_is_symmetric_and_half_away_from_zero():
    values = np.array([[1.0, -0.5, 0.25], [2.54, -1.27, 0.0], [0.0, 0.0, 0.0]], np.float32)
    q, scale = quantize_per_channel(values, axis=0)
    assert scale.tolist() == [np.float32(1 / 127), np.float32(2.54 / 127), 1.0]  # an all-zero row keeps scale 1
    assert q[0].tolist() == [127, -64, 32]  # -63.5 rounds away from zero, as std::round does
    assert q[1].tolist() == [127, -64, 0] and q[2].tolist() == [0, 0, 0]
    assert np.abs(q[:2] * scale[:2, None] - values[:2]).max() <= scale[:2].max() / 2 + 1e-7
