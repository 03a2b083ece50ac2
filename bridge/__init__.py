"""bridge: one command from PyTorch, Keras or ONNX to ONNX and TFLite, with a parity verdict for
every artifact.

    from bridge import ConvertOptions, convert
    report = convert("model.py:make", ConvertOptions(targets=("onnx", "tflite")))
    assert report.passed

Importing this package imports no ML framework; each stage loads its own in a child process.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"
__all__ = ["convert", "validate", "ConvertOptions", "ValidateOptions", "Report"]

# Loaded on first use (PEP 562): a stage child imports `bridge.stages` and the modules its stage
# names, not the orchestration (0.3 s and numpy's import in every child otherwise).
_PUBLIC = {"convert": "bridge.conversion", "ConvertOptions": "bridge.conversion", "Report": "bridge.report",
           "validate": "bridge.validation", "ValidateOptions": "bridge.validation"}


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'bridge' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
