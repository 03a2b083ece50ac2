"""Which layout a TFLite output has: from its shape where only one fits, from the values where
several do. Plain numpy: the cases onnx2tf 1.x wrote and 2.x may write again."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.base.errors import ConversionError
from bridge.base.tensors import TensorSpec
from bridge.converters.tflite.layout import CHANNEL_LAST, choose_by_values, output_candidates

NCHW_TO_NHWC = CHANNEL_LAST[4]
NCW_TO_NWC = CHANNEL_LAST[3]


def test_a_shape_that_fits_one_layout_decides_it():
    spec = TensorSpec("y", (1, 8, 5, 7))
    assert output_candidates(spec, (1, 5, 7, 8)) == [NCHW_TO_NHWC]
    assert output_candidates(spec, (1, 8, 5, 7)) == [None]


def test_c_equal_h_equal_w_fits_both_source_order_first():
    assert output_candidates(TensorSpec("y", (1, 4, 4, 4)), (1, 4, 4, 4)) == [None, NCHW_TO_NHWC]


@pytest.mark.parametrize("file_shape, expected", [
    ((1, -1, 16), [None, NCW_TO_NWC]),  # where 2.x writes it: the dynamic dim stays in place
    ((1, 16, -1), [NCW_TO_NWC, None]),  # where 1.x wrote it: the dynamic axis moved last
])
def test_the_dynamic_axis_decides_first_even_when_sizes_look_alike(file_shape, expected):
    """[1, T, 16] with T dynamic and T = 16 at conversion: both layouts fit the sizes; the one that
    puts the dynamic axis on a dynamic dim of the file comes first."""
    assert output_candidates(TensorSpec("y", (1, 16, 16), dynamic=(1,)), file_shape, (1,)) == expected


def test_a_scalar_written_as_one_element_is_the_source_layout():
    assert output_candidates(TensorSpec("loss", ()), (1,)) == [None]


def test_a_shape_no_layout_explains_is_refused():
    with pytest.raises(ConversionError, match=r"output y of shape \[1, 8, 5, 7\] into \[1, 8, 7, 5\]"):
        output_candidates(TensorSpec("y", (1, 8, 5, 7)), (1, 8, 7, 5))


def test_values_choose_between_layouts_that_fit_the_shape():
    """C == H == W: a wrong guess is no shape error, only wrong numbers."""
    hub = np.random.default_rng(0).standard_normal((1, 4, 4, 4)).astype(np.float32)
    nhwc = hub.transpose(NCHW_TO_NHWC)
    assert choose_by_values("y", [None, NCHW_TO_NHWC], nhwc, hub) == NCHW_TO_NHWC
    assert choose_by_values("y", [None, NCHW_TO_NHWC], hub.copy(), hub) is None
    with pytest.raises(ConversionError, match="under no layout"):
        choose_by_values("y", [None], np.zeros((1, 2, 3), np.float32), hub)
