"""bridge: one command from PyTorch, Keras or ONNX to ONNX and TFLite, with a parity verdict for
every artifact.

    from bridge import ConvertOptions, convert
    report = convert("model.py:make", ConvertOptions(targets=("onnx", "tflite")))
    assert report.passed

Importing this package imports no ML framework; each stage loads its own in a child process.
"""

from __future__ import annotations

from bridge.conversion import ConvertOptions, convert
from bridge.report import Report
from bridge.validation import ValidateOptions, debug, validate

__version__ = "0.1.0"
__all__ = ["convert", "validate", "debug", "ConvertOptions", "ValidateOptions", "Report"]
