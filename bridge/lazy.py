"""Import a framework only where it is used, with one clear error when it is missing."""

from __future__ import annotations

import importlib
import sys
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
    "flatbuffers": "tflite",
    "coremltools": "coreml",
    "PIL": "tflite",
}


def require(module: str, without: tuple[str, ...] = ()) -> ModuleType:
    """`import module`, or raise `MissingBackend` naming the extra that installs it.

    `without` names frameworks `module` would import only to probe for them (coremltools imports
    TensorFlow, torch and scikit-learn: 8 s of a Core ML runtime child's 9): on its first import
    they look absent, and `module` keeps believing so for the life of the process. Only for
    processes that need none of them (a stage child running an artifact).
    """
    blocked = [m for m in without if m not in sys.modules] if module not in sys.modules else []
    try:
        for m in blocked:
            sys.modules[m] = None  # `import m` raises ImportError
        return importlib.import_module(module)
    except ImportError as e:
        root = module.split(".")[0]
        if e.name and e.name.split(".")[0] != root:
            raise  # the module exists but one of its own imports is broken: show that
        raise MissingBackend(root, EXTRAS.get(root, "all")) from None
    finally:
        for m in blocked:
            if sys.modules.get(m, 0) is None:
                del sys.modules[m]
