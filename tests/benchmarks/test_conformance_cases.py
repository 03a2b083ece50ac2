"""The node-test cases the conformance harness converts: what the freezing rule keeps as graph
inputs, what it freezes, and that the frozen model still computes the test's expected outputs."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from benchmarks.conformance import cases  # noqa: E402


def _frozen(name: str):
    model, feeds, expected = cases.build(name)
    initializers = {t.name: t for t in model.graph.initializer}
    return model, feeds, expected, initializers


def _assert_matches_expected(model, feeds, expected) -> None:
    """The frozen model on onnxruntime, fed the kept inputs only, gives the test's outputs."""
    outputs = cases.run_reference(model, feeds)
    assert len(outputs) == len(expected)
    for got, want in zip(outputs, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_conv_freezes_its_weight():
    model, feeds, expected, inits = _frozen("test_conv_with_strides_padding")
    assert [i.name for i in model.graph.input] == ["x"]
    assert list(inits) == ["W"] and list(inits["W"].dims) == [1, 1, 3, 3]
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [1, 1, 7, 5]  # static
    _assert_matches_expected(model, feeds, expected)


def test_reshape_freezes_its_shape_and_is_declared_at_a_readable_opset():
    model, feeds, expected, inits = _frozen("test_reshape_reordered_all_dims")
    assert [i.name for i in model.graph.input] == ["data"]
    assert list(inits) == ["shape"] and inits["shape"].data_type == 7  # int64
    assert cases.opset_of(model) == cases.MAX_OPSET  # stored at 24, which onnxruntime 1.23 cannot read
    _assert_matches_expected(model, feeds, expected)


def test_add_keeps_both_inputs():
    model, feeds, expected, inits = _frozen("test_add_bcast")
    assert [i.name for i in model.graph.input] == ["x", "y"] and not inits
    assert feeds["x"].shape != feeds["y"].shape  # broadcast: each input keeps its own static shape
    _assert_matches_expected(model, feeds, expected)


def test_gemm_freezes_its_second_operand_and_bias():
    model, feeds, expected, inits = _frozen("test_gemm_default_matrix_bias")
    assert [i.name for i in model.graph.input] == ["a"]
    assert sorted(inits) == ["b", "c"]
    _assert_matches_expected(model, feeds, expected)


def test_where_keeps_its_branches_and_freezes_the_condition():
    model, feeds, expected, inits = _frozen("test_where_example")
    assert [i.name for i in model.graph.input] == ["x", "y"]
    assert list(inits) == ["condition"]
    _assert_matches_expected(model, feeds, expected)


@pytest.mark.parametrize(("name", "reason"), [
    ("test_add_uint8", "no float data input"),
    ("test_bernoulli", "random op"),
    ("test_adam", "training op"),
    ("test_sequence_insert_at_back", "sequence type"),
])
def test_cases_that_cannot_be_deployed_are_skipped_with_a_reason(name, reason):
    case = cases.classify(name)
    assert not case.kept
    assert case.skip_reason.startswith(reason)


def test_expanded_variants_name_their_base_test():
    assert cases.base_of("test_softmax_axis_0_expanded") == "test_softmax_axis_0"
    assert cases.base_of("test_layer_normalization_2d_axis0_expanded_ver18") == "test_layer_normalization_2d_axis0"
    assert cases.base_of("test_softmax_axis_0") is None


def test_kept_case_records_its_reference_agreement():
    case = cases.classify("test_relu")
    assert case.kept and case.inputs == ["x"] and case.frozen == []
    assert case.reference["matches"] and case.reference["rel_l2"] == 0.0
