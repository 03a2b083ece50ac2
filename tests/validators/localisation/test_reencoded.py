"""Taps of the isolated profile on a W8A8 graph as coremltools leaves it after
`distributive_quantized_binary_op_scale_normalization` (the tracer sees no int8 tensor): the add
reads dequantizes of its own at s_x/s_y and 1 and holds its value divided by s_y. End to end (a
real conversion) in tests/e2e/test_mixed_precision.py."""

from __future__ import annotations

import numpy as np

from bridge.validators.localisation.graph import TracedGraph, TracedOp
from bridge.validators.localisation.reencoded import taps, units


def qdq(x: np.ndarray, s_q: float, s_d: float) -> np.ndarray:
    return np.clip(np.round(x / s_q), -127, 127) * s_d


def test_a_normalized_add_is_read_in_its_units_and_its_readers_given_at_every_dequantize():
    rng = np.random.default_rng(0)
    x, y = rng.normal(0, 1, (1, 8, 4, 4)).astype(np.float32), rng.normal(0, 3, (1, 8, 4, 4)).astype(np.float32)
    s_x, s_y, s_z = 4 / 127, 12 / 127, 15 / 127
    z = qdq(x, s_x, s_x / s_y) + qdq(y, s_y, 1.0)  # the add after normalization: about (x + y) / s_y
    values = {"in": x, "x": x, "x_dq": qdq(x, s_x, s_x), "x_dq2": qdq(x, s_x, s_x / s_y), "y": y,
              "y_dq": qdq(y, s_y, 1.0), "z": z, "z_dq": qdq(z, s_z / s_y, s_z), "r": qdq(z, s_z / s_y, s_z) * 2}
    op = TracedOp
    graph = TracedGraph((
        op("conv_x", "conv", ("in",), ("x",)), op("qx", "quantize", ("x",), ("x_q",), True),
        op("dqx", "dequantize", ("x_q",), ("x_dq",), True), op("dqx2", "dequantize", ("x_q",), ("x_dq2",), True),
        op("conv_y", "conv", ("in",), ("y",)), op("qy", "quantize", ("y",), ("y_q",), True),
        op("dqy", "dequantize", ("y_q",), ("y_dq",), True),
        op("add", "add", ("x_dq2", "y_dq"), ("z",)), op("qz", "quantize", ("z",), ("z_q",), True),
        op("dqz", "dequantize", ("z_q",), ("z_dq",), True), op("relu", "mul", ("z_dq",), ("r",)),
    ), {"in": "in"}, {"r": "r"})
    u = units(graph, values)
    assert u["x"] == u["x_dq"] == u["y"] == u["z_dq"] == u["r"] == 1.0
    assert np.isclose(u["x_dq2"], 1 / s_y, rtol=0.02) and np.isclose(u["y_dq"], 1 / s_y, rtol=0.02)
    assert np.isclose(u["z"], 1 / s_y, rtol=0.02)  # the add computes in its inputs' common unit

    found = taps(graph, ["x_dq", "y", "z"], values)
    # x: read after its own rounding (the first dequantize), given at both dequantizes in their units
    assert found["x_dq"].tensor == "x_dq" and dict(found["x_dq"].given).keys() == {"x_dq", "x_dq2"}
    assert np.isclose(dict(found["x_dq"].given)["x_dq2"], 1 / s_y, rtol=0.02)
    assert found["y"].tensor == "y_dq" and np.isclose(found["y"].units, 1 / s_y, rtol=0.02)
    assert found["z"].tensor == "z_dq" and found["z"].units == 1.0  # read back in the hub's units


def test_a_tensor_read_in_float_is_tapped_where_it_is():
    values = {"in": np.ones((2, 3), np.float32), "a": np.full((2, 3), 2.0, np.float32),
              "b": np.full((2, 3), 4.0, np.float32)}
    graph = TracedGraph((TracedOp("a", "mul", ("in",), ("a",)), TracedOp("b", "mul", ("a",), ("b",))),
                        {"in": "in"}, {"b": "b"})
    assert taps(graph, ["a", "b"], values) == {"a": _tap("a"), "b": _tap("b")}


def _tap(t: str):
    from bridge.validators.localisation.reencoded import Tap

    return Tap(t, 1.0, ((t, 1.0),))
