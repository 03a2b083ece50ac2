"""The small zoo `bridge batch` is tested and benchmarked on: a torch entrypoint (with its module
and weights copied, so tests may edit them), the Keras sample, an ONNX file `bridge convert` makes
from the entrypoint, and a model that fails on purpose (the Core ML lane refuses its Det).

    build(folder)                  the files and matrix-fp32.toml
    write_matrix(folder, "fp32,fp16")  the same matrix with another TFLite quantize list for the torch model
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
BRIDGE = Path(sys.executable).parent / "bridge"

MATRIX = """
[defaults]
targets = ["onnx", "tflite"]
quantize = ["tflite=fp32"]

[[model]]
name = "cnn-torch"
source = "shapes_cnn.py:load"
targets = ["onnx", "tflite", "coreml"]
quantize = ["tflite={tflite}", "coreml=fp16"]

[[model]]
name = "cnn-keras"
source = "{keras}"

[[model]]
name = "cnn-onnx"
source = "cnn.onnx"

[[model]]
name = "broken"
source = "broken.onnx"
targets = ["onnx", "coreml"]
quantize = ["coreml=fp32"]
"""

# The same models as `bridge convert` arguments (relative to the zoo folder).
SINGLE = {
    "cnn-torch": ["shapes_cnn.py:load", "--target", "onnx", "--target", "tflite", "--target", "coreml",
                  "--quantize", "tflite=fp32", "--quantize", "coreml=fp16"],
    "cnn-keras": [str(SAMPLES / "shapes_keras.keras"), "--target", "onnx", "--target", "tflite",
                  "--quantize", "tflite=fp32"],
    "cnn-onnx": ["cnn.onnx", "--target", "onnx", "--target", "tflite", "--quantize", "tflite=fp32"],
    "broken": ["broken.onnx", "--target", "onnx", "--target", "coreml", "--quantize", "coreml=fp32"],
}
EXIT = {"cnn-torch": 0, "cnn-keras": 0, "cnn-onnx": 0, "broken": 3}


def build(zoo: Path) -> Path:
    """Fill `zoo`; returns the matrix file."""
    zoo.mkdir(parents=True, exist_ok=True)
    for name in ("shapes_cnn.py", "shapes.py", "shapes_cnn.pt"):
        shutil.copy(SAMPLES / name, zoo / name)
    r = subprocess.run([str(BRIDGE), "convert", "shapes_cnn.py:load", "--target", "onnx", "--out", "made",
                        "--no-cache"], cwd=zoo, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"bridge convert failed: {r.stderr[-2000:]}")
    shutil.copy(zoo / "made" / "shapes_cnn.onnx", zoo / "cnn.onnx")
    shutil.rmtree(zoo / "made")
    broken_onnx(zoo / "broken.onnx")
    return write_matrix(zoo)


def write_matrix(zoo: Path, tflite: str = "fp32") -> Path:
    path = zoo / f"matrix-{tflite.replace(',', '-')}.toml"
    path.write_text(MATRIX.format(tflite=tflite, keras=SAMPLES / "shapes_keras.keras"))
    return path


def broken_onnx(path: Path) -> None:
    """Conv then Det: onnxruntime runs it, the Core ML lane's preflight refuses Det (it has no
    converter; Hardmax served here until the lane learnt it)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["h"], pads=[1, 1, 1, 1]), helper.make_node("Det", ["h"], ["output"])]
    graph = helper.make_graph(nodes, "broken", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
