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


def test_no_layer_kept_on_a_file_with_two_outputs_leaves_it_as_it_was(tmp_path):
    """The search's first step keeps nothing; cutting that into a file whose subgraph has more than
    one output raised ("truth value of an array ... is ambiguous": the subgraph's outputs are a
    numpy array), so `int8-mixed` crashed at conversion on every multi-output model (the
    Cycle-CenterNet DLA-34's four heads) even where `int8` passed."""
    from bridge.converters.tflite.mixed import keep_float
    from bridge.validators.runners.tflite import TFLiteRunner

    rng = np.random.default_rng(6)
    inits = [numpy_helper.from_array((rng.standard_normal((4, 3, 3, 3)) * 0.4).astype(np.float32), "w1"),
             numpy_helper.from_array((rng.standard_normal((4, 3, 3, 3)) * 0.4).astype(np.float32), "w2")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["y"], pads=[1, 1, 1, 1], name="head_a"),
             helper.make_node("Conv", ["x", "w2"], ["z"], pads=[1, 1, 1, 1], name="head_b")]
    graph = helper.make_graph(nodes, "two", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4, 16, 16]) for n in "yz"],
                              inits)
    fp32 = to_tflite(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8), tmp_path)
    int8 = calibrate(str(fp32), ([x] for x in images(16, seed=7)), "int8", False).data
    data, missed, made = keep_float(int8, fp32.read_bytes(), [], public=set(), nodes=[])
    assert (missed, made) == ([], []) and fbu.op_counts(data) == fbu.op_counts(int8)
    (tmp_path / "int8.tflite").write_bytes(int8)
    (tmp_path / "kept.tflite").write_bytes(data)
    feed = {"x": images(1)[0]}
    outputs = []
    for name in ("int8", "kept"):
        runner = TFLiteRunner()
        runner.load(str(tmp_path / f"{name}.tflite"))
        outputs.append(runner.infer(feed))
    assert sorted(outputs[0]) == ["y", "z"]
    assert all(np.array_equal(outputs[0][k], outputs[1][k]) for k in "yz")
