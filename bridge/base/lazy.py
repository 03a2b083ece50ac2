"""Import a framework only where it is used, with one clear error when it is missing."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from bridge.base.errors import MissingBackend


@dataclass(frozen=True)
class Dependency:
    module: str  # what code imports
    distribution: str  # what pip installs (and reports a version for)
    extra: str  # the bridge-convert extra that installs it ("" for the base install)


# The one list of what bridge may import: `require`, `bridge doctor`, the report's environment and
# the lanes' declarations all read it.
DEPENDENCIES = (
    Dependency("numpy", "numpy", ""),
    Dependency("torch", "torch", "torch"),
    Dependency("onnx", "onnx", "onnx"),
    Dependency("onnxruntime", "onnxruntime", "onnx"),
    Dependency("onnxslim", "onnxslim", "onnx"),
    Dependency("tensorflow", "tensorflow", "keras"),
    Dependency("keras", "keras", "keras"),
    Dependency("tf_keras", "tf-keras", "keras"),
    Dependency("tf2onnx", "tf2onnx", "keras"),
    Dependency("onnx2tf", "onnx2tf", "tflite"),
    Dependency("ai_edge_litert", "ai-edge-litert", "tflite"),
    Dependency("flatbuffers", "flatbuffers", "tflite"),
    Dependency("coremltools", "coremltools", "coreml"),
    Dependency("sklearn", "scikit-learn", "coreml"),
    Dependency("PIL", "pillow", "tflite"),
    Dependency("jinja2", "jinja2", ""),  # report.html
    Dependency("matplotlib", "matplotlib", ""),  # report.html's figures
    Dependency("ray", "ray", "ray"),  # `bridge batch --executor ray` only
)
EXTRAS = {d.module: d.extra for d in DEPENDENCIES}


def require(module: str) -> ModuleType:
    """`import module`, or raise `MissingBackend` naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        root = module.split(".")[0]
        if e.name and e.name.split(".")[0] != root:
            raise  # the module exists but one of its own imports is broken: show that
        raise MissingBackend(root, EXTRAS.get(root, "all")) from None
