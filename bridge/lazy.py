"""Import a framework only where it is used, with one clear error when it is missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from bridge.errors import MissingBackend

# module -> the extra that installs it
EXTRAS = {
    "torch": "torch",
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "onnxslim": "onnx",
    "tensorflow": "keras",
    "keras": "keras",
    "tf2onnx": "keras",
    "onnx2tf": "tflite",
    "ai_edge_litert": "tflite",
    "coremltools": "coreml",
    "PIL": "tflite",
}


def require(module: str) -> ModuleType:
    """`import module`, or raise `MissingBackend` naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        root = module.split(".")[0]
        if e.name and e.name.split(".")[0] != root:
            raise  # the module exists but one of its own imports is broken: show that
        raise MissingBackend(root, EXTRAS.get(root, "all")) from None
