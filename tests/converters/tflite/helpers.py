"""Small float graphs made in code, turned into float32 .tflite files the way the lane does, and run
on ai-edge-litert as bridge's runner runs them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnx2tf")
pytest.importorskip("ai_edge_litert.interpreter")
helper, numpy_helper, TensorProto = onnx.helper, onnx.numpy_helper, onnx.TensorProto

OPSET = 17


def cnn(gain: float = 1.0, epsilon: float | None = None) -> onnx.ModelProto:
    """x [1, 3, 16, 16] -> conv 3x3 (16) -> relu -> depthwise 3x3 -> relu -> global pool -> gemm (10).

    `gain` multiplies the pooled features by a constant before the gemm (a constant float16 cannot
    hold when it is 1e5); `epsilon` adds a tiny constant there too (one float16 rounds to 0)."""
    rng = np.random.default_rng(0)

    def init(name, *shape, scale=0.3):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    inits = [init("w1", 16, 3, 3, 3), init("b1", 16, scale=0.1), init("w2", 16, 1, 3, 3), init("b2", 16, scale=0.1),
             init("w3", 10, 16, scale=0.5), init("b3", 10, scale=0.1),
             numpy_helper.from_array(np.array(gain, np.float32), "gain"),
             numpy_helper.from_array(np.array(epsilon or 0.0, np.float32), "eps")]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=16, name="depthwise"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Mul", ["f", "gain"], ["g"], name="gain"),
        helper.make_node("Add", ["g", "eps"], ["e"], name="epsilon"),
        helper.make_node("Gemm", ["e", "w3", "b3"], ["y"], transB=1, name="head"),
    ]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def gated(live: float = 0.5, seed: int = 4, channels: int = 8) -> onnx.ModelProto:
    """x [1, 3, 16, 16] -> conv 3x3 -> relu -> conv 1x1 with negative weights and bias `live` -> relu.

    The second ReLU passes only where the first one's outputs are small: its weights' rounding
    error shifts the output least where the output is live, so the mean shift measured over every
    position (what bias correction takes out) adds an error there. With `live` 0.5 the corrected
    int16x8 file is ~1 dB further from the float one on `images(16, seed=7)`; with 3.0 (live almost
    everywhere) it is 0.09 dB closer."""
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((channels, 3, 3, 3)) * 0.5).astype(np.float32)
    w2 = (-np.abs(rng.standard_normal((channels, channels, 1, 1))) * 0.5).astype(np.float32)
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(np.zeros(channels, np.float32), "b1"),
             numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(np.full(channels, live, np.float32), "b2")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2"),
             helper.make_node("Relu", ["c2"], ["y"], name="relu2")]
    graph = helper.make_graph(nodes, "gated", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, 16, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def to_tflite(model: onnx.ModelProto, folder: Path) -> Path:
    """The float32 file onnx2tf writes for `model` in the lane (image inputs channel-last)."""
    from bridge.converters.tflite.direct import convert_float
    from bridge.converters.tflite.layout import InputPlan

    return convert_float(model, folder / "onnx2tf", InputPlan((), (), {}, {}), {}).path


def images(count: int, seed: int = 1) -> list[np.ndarray]:
    """Channel-last inputs for `cnn`'s file."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((1, 16, 16, 3)).astype(np.float32) for _ in range(count)]


def run(path: Path, inputs: list[np.ndarray]) -> np.ndarray:
    """`y` for each input, through bridge's TFLite runner (integer I/O quantized and dequantized)."""
    from bridge.validators.runners.tflite import TFLiteRunner

    runner = TFLiteRunner()
    runner.load(str(path))
    return np.concatenate([runner.infer({"x": x})["y"] for x in inputs])


def snr_db(actual: np.ndarray, reference: np.ndarray) -> float:
    error = float(np.sum((actual.astype(np.float64) - reference) ** 2))
    return 10 * np.log10(float(np.sum(reference.astype(np.float64) ** 2)) / max(error, 1e-300))


def tensor_types(path: Path) -> dict[str, int]:
    """Tensor type name -> how many tensors have it, constants and activations together."""
    from bridge.converters.tflite import flatbuffer as fbu

    model = fbu.load(path.read_bytes())
    names = {v: k for k, v in vars(fbu.schema().TensorType).items() if not k.startswith("_")}
    counts: dict[str, int] = {}
    for sg in model.subgraphs:
        for t in sg.tensors:
            counts[names[t.type]] = counts.get(names[t.type], 0) + 1
    return counts


def constant_bytes(path: Path) -> int:
    """Bytes of tensor data the file stores (its weights and other constants)."""
    from bridge.converters.tflite import flatbuffer as fbu

    model = fbu.load(path.read_bytes())
    return sum(len(b.data) for b in model.buffers if b.data is not None)


def constant_types(path: Path) -> dict[str, str]:
    """Constant tensor name -> its type name."""
    from bridge.converters.tflite import flatbuffer as fbu

    model = fbu.load(path.read_bytes())
    names = {v: k for k, v in vars(fbu.schema().TensorType).items() if not k.startswith("_")}
    out = {}
    for sg in model.subgraphs:
        for t in sg.tensors:
            if fbu.constant(model, t) is not None:
                out[t.name.decode() if isinstance(t.name, bytes) else t.name] = names[t.type]
    return out
