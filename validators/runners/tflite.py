"""TFLite artifacts on ai-edge-litert, the runtime Android ships.

Runs in a process that never imported TensorFlow (see `bridge.stages`): there, as on a phone,
a model with Flex ops fails instead of silently borrowing TensorFlow's kernels.
"""

from __future__ import annotations

import numpy as np

from bridge.base.arrays import Feed
from bridge.base.lazy import require


class TFLiteRunner:
    runtime = "ai-edge-litert"

    def load(self, path: str) -> None:
        self.path = path
        self._by_shape: dict[tuple, object] = {}
        self.runner = self._runner(None)
        self.inputs = self.runner.get_input_details()
        self.outputs = self.runner.get_output_details()

    def _runner(self, shapes: dict[str, tuple] | None):
        """One interpreter per set of input shapes, resized before its first allocation: XNNPack
        (the default CPU delegate, as on phones) cannot reshape a prepared graph, so a dynamic axis
        is validated the way an app would run it, with an interpreter built for that size."""
        key = tuple(sorted(shapes.items())) if shapes else None
        if key not in self._by_shape:
            litert = require("ai_edge_litert.interpreter")
            interp = litert.Interpreter(model_path=self.path, num_threads=1)
            if shapes:
                details = interp.get_signature_runner().get_input_details()
                for name, shape in shapes.items():
                    interp.resize_tensor_input(details[name]["index"], list(shape), strict=True)
                interp.allocate_tensors()
            self._by_shape[key] = interp.get_signature_runner()
        return self._by_shape[key]

    def infer(self, feed: Feed) -> Feed:
        args = {name: _quantize(feed[name], d) for name, d in self.inputs.items()}
        declared = {name: tuple(d["shape"]) for name, d in self.inputs.items()}
        shapes = {n: a.shape for n, a in args.items()}
        runner = self.runner if shapes == declared else self._runner(shapes)
        out = runner(**args)
        return {name: _dequantize(np.asarray(out[name]), d) for name, d in self.outputs.items()}


def _quantize(x: np.ndarray, d: dict) -> np.ndarray:
    """Integer inputs take real values in the units the model expects: quantize with its params."""
    dtype = np.dtype(d["dtype"])
    scale, zero = d["quantization"]
    if dtype.kind in "iu" and x.dtype.kind == "f" and scale:
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)
    return x.astype(dtype, copy=False)


def _dequantize(y: np.ndarray, d: dict) -> np.ndarray:
    scale, zero = d["quantization"]
    if y.dtype.kind in "iu" and scale:
        return (y.astype(np.float32) - zero) * np.float32(scale)
    return y


def describe(path: str) -> dict:
    """The artifact's signature tensors and the mode its tensor types reveal (for `bridge validate`
    and `bridge inspect`). Reads through the interpreter, so it needs no TensorFlow."""
    litert = require("ai_edge_litert.interpreter")
    interp = litert.Interpreter(model_path=path)
    runner = interp.get_signature_runner()

    def tensors(details: dict) -> list[dict]:
        return [{"name": name, "shape": [int(v) for v in d["shape_signature"]], "dtype": np.dtype(d["dtype"]).name,
                 "quantization": list(d["quantization"]) if d["quantization"][0] else None}
                for name, d in details.items()]

    inputs, outputs = tensors(runner.get_input_details()), tensors(runner.get_output_details())
    dtypes = {np.dtype(t["dtype"]).name for t in interp.get_tensor_details()}
    ops = {}
    for op in interp._get_ops_details():  # noqa: SLF001 - the only op listing litert offers
        ops[op["op_name"]] = ops.get(op["op_name"], 0) + 1
    return {"inputs": inputs, "outputs": outputs, "mode": infer_mode(inputs, dtypes, ops), "ops": ops}


def infer_mode(inputs: list[dict], dtypes: set[str], ops: dict[str, int]) -> str:
    """Tensor types tell the quantization: int8 I/O, int16 activations, int8 activations
    (quantize ops present), int8 weights only, float16 weights, or plain float32."""
    if any(t["dtype"] in ("int8", "uint8") and t["quantization"] for t in inputs):
        return "int8-io"
    if "int16" in dtypes:
        return "int16x8"
    if "int8" in dtypes and "QUANTIZE" in ops:
        return "int8"
    if "int8" in dtypes:
        return "dynamic-int8"
    if "float16" in dtypes:
        return "fp16"
    return "fp32"
