"""The Core ML executor reuses coremltools internals (milproto loader, ops' value_inference): its
results are only vouched for on the exact version it was tested with."""

from importlib import metadata

import pytest


def test_coremltools_is_the_pinned_version():
    pytest.importorskip("coremltools")
    assert metadata.version("coremltools") == "9.0", "re-run tests/validators/coreml_reference before moving the pin"


def test_onnx2tf_stack_is_the_pinned_version():
    assert metadata.version("onnx2tf") == "1.29.24"
    assert metadata.version("tensorflow") == "2.19.0"
    assert metadata.version("torch").startswith("2.13.0")
