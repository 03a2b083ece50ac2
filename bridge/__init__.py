"""bridge: one command from PyTorch, Keras or ONNX to ONNX and TFLite, with a parity verdict for
every artifact.

    from bridge import ConvertOptions, convert
    report = convert("model.py:make", ConvertOptions(targets=("onnx", "tflite")))
    assert report.passed

Importing this package imports no ML framework; each stage loads its own in a child process. The
names below load on first use (PEP 562), so `bridge --help` and the console script's start do not
pay for the orchestrator they may never call.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bridge.conversion import ConvertOptions, convert
    from bridge.report import Report
    from bridge.validation import ValidateOptions, debug, validate

__version__ = "0.1.0"
__all__ = ["convert", "validate", "debug", "ConvertOptions", "ValidateOptions", "Report"]
_HOME = {"convert": "bridge.conversion", "ConvertOptions": "bridge.conversion", "validate": "bridge.validation",
         "debug": "bridge.validation", "ValidateOptions": "bridge.validation", "Report": "bridge.report"}


def __getattr__(name: str):
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module 'bridge' has no attribute {name!r}")
