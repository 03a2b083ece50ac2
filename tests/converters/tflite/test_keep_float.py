"""`int8-mixed`'s float islands (`mixed.keep_float`) on files made the way the lane makes them.

The graph ends as a DBNet does (PaddleOCR's detectors, the zoo's table detector): a step function
1 / (1 + exp(-50 (p - t))) over two sigmoid maps. In int8 the sum 1 + exp(...) spans 1 to ~1e22,
so its 256 steps put every value that matters at 0, and the reciprocal (which the quantizer leaves
float: DIV has no integer kernel) is Inf. Keeping Sub, Mul, Exp and Add in float must hand the
float sum to the reciprocal as it is."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.converters.tflite import flatbuffer as fbu
from bridge.converters.tflite.quantize import calibrate
from tests.converters.tflite.helpers import OPSET, TensorProto, helper, images, numpy_helper, run, snr_db, to_tflite

STEP = ["d", "scaled", "exp", "sum"]  # the outputs of Sub, Mul, Exp and Add


def _db_head():
    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array((rng.standard_normal((4, 3, 3, 3)) * 0.4).astype(np.float32), "wp"),
             numpy_helper.from_array((rng.standard_normal((4, 3, 3, 3)) * 0.4).astype(np.float32), "wt"),
             numpy_helper.from_array(np.array(-50.0, np.float32), "k"),
             numpy_helper.from_array(np.array(1.0, np.float32), "one")]
    nodes = [helper.make_node("Conv", ["x", "wp"], ["pc"], pads=[1, 1, 1, 1], name="prob_conv"),
             helper.make_node("Sigmoid", ["pc"], ["p"], name="prob"),
             helper.make_node("Conv", ["x", "wt"], ["tc"], pads=[1, 1, 1, 1], name="thresh_conv"),
             helper.make_node("Sigmoid", ["tc"], ["t"], name="thresh"),
             helper.make_node("Sub", ["p", "t"], ["d"], name="diff"),
             helper.make_node("Mul", ["d", "k"], ["scaled"], name="scale"),
             helper.make_node("Exp", ["scaled"], ["exp"], name="exp"),
             helper.make_node("Add", ["exp", "one"], ["sum"], name="plus_one"),
             helper.make_node("Reciprocal", ["sum"], ["y"], name="step")]
    graph = helper.make_graph(nodes, "db_head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mixed")
    fp32 = to_tflite(_db_head(), folder)
    int8 = folder / "int8.tflite"
    int8.write_bytes(calibrate(str(fp32), ([x] for x in images(16, seed=7)), "int8", True).data)  # DIV stays float
    return fp32, int8


def test_the_step_function_in_int8_is_inf(files):
    fp32, int8 = files
    inputs = images(4)
    assert np.isfinite(run(fp32, inputs)).all()
    assert np.isinf(run(int8, inputs)).mean() > 0.5


def test_keeping_the_step_in_float_hands_the_sum_to_the_float_reciprocal_as_it_is(files, tmp_path):
    from bridge.converters.tflite.mixed import keep_float

    fp32, int8 = files
    data, missed, made = keep_float(int8.read_bytes(), fp32.read_bytes(), STEP)
    assert missed == [] and set(STEP) <= set(made)
    path = tmp_path / "mixed.tflite"
    path.write_bytes(data)
    ops = fbu.op_counts(data)
    assert ops["DIV"] == 1 and ops["QUANTIZE"] == 1  # the input's; the kept sum is never requantized
    inputs = images(4)
    got, want = run(path, inputs), run(fp32, inputs)
    assert np.isfinite(got).all()
    # what is left in int8 (the convolutions, sigmoids and their difference) only: well under a step
    # what stays int8 is the sigmoids: their step (1/256) times 50 in the exponent blurs the edge
    assert snr_db(got, want) > 25
