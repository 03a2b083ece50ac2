"""TFLite artifacts on ai-edge-litert, the runtime Android ships.

Runs in a process that never imported TensorFlow (see `bridge.isolation`): there, as on a phone,
a model with Flex ops fails instead of silently borrowing TensorFlow's kernels.
"""

from __future__ import annotations

import numpy as np

from bridge.converters.base import Feed
from bridge.lazy import require


class TFLiteRunner:
    runtime = "ai-edge-litert"

    def load(self, path: str) -> None:
        litert = require("ai_edge_litert.interpreter")
        self.interpreter = litert.Interpreter(model_path=path, num_threads=1)
        self.runner = self.interpreter.get_signature_runner()
        self.inputs = self.runner.get_input_details()
        self.outputs = self.runner.get_output_details()

    def infer(self, feed: Feed) -> Feed:
        args = {name: _quantize(feed[name], d) for name, d in self.inputs.items()}
        out = self.runner(**args)
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
