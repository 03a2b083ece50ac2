"""The Core ML executor reuses coremltools internals (milproto loader, ops' value_inference): its
results are only vouched for on the exact version it was tested with."""

from importlib import metadata

import pytest


def test_coremltools_is_the_pinned_version():
    pytest.importorskip("coremltools")
    assert metadata.version("coremltools") == "9.0", "re-run tests/validators/coreml_reference before moving the pin"


def test_onnx2tf_stack_is_the_pinned_version():
    """The TFLite lane's rewrites, preflight and flatbuffer edits are measured on these versions."""
    assert metadata.version("onnx2tf") == "2.6.9"
    assert metadata.version("ai-edge-litert") == "2.1.2"
    assert metadata.version("tensorflow") == "2.21.0"
    assert metadata.version("torch").startswith("2.13.0")
