"""GatherND, ScatterND, ScatterElements and OneHot, run by the reference executor against onnxruntime."""

import numpy as np
import pytest
from onnx import helper

from tests.converters.coreml.harness import graph, parity

coremltools = pytest.importorskip("coremltools")
RNG = np.random.default_rng(0)


def _parity(nodes, feed, outputs, inits, opset=18, expect_ops=()):
    parity(graph(nodes, feed, outputs, inits, opset=opset), feed, expect_ops=expect_ops, rtol=1e-6, atol=1e-6)


def test_gather_nd_batch_dims_and_negative_indices():
    feed = {"x": RNG.standard_normal((2, 3, 4)).astype(np.float32), "ids": np.array([[1, 0], [0, 2]], np.int32)}
    inits = {"pairs": np.array([[0, -1], [1, 2], [-1, 0]], np.int64), "rows": np.array([[-1], [0]], np.int64)}
    nodes = [helper.make_node("GatherND", ["x", "pairs"], ["g"]),
             helper.make_node("GatherND", ["x", "rows"], ["gb"], batch_dims=1),
             helper.make_node("Cast", ["ids"], ["ids64"], to=7),
             helper.make_node("GatherND", ["x", "ids64"], ["runtime"])]
    _parity(nodes, feed, ["g", "gb", "runtime"], inits, expect_ops=("gather_nd",))


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
def test_scatter_nd_and_scatter_elements_reductions(reduction):
    """Repeated indices accumulate under a reduction (never under 'none', where ONNX leaves them
    undefined); negative indices count from the end."""
    shapes = {"x": (4, 3, 2), "u": (2, 3, 2), "e": (4, 2), "v": (2, 2)}
    feed = {name: RNG.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}
    repeat = reduction != "none"
    inits = {"nd": np.array([[1], [-1 if not repeat else 1]], np.int64),
             "el": np.array([[0, 1], [-1 if not repeat else 0, 2]], np.int64)}
    nodes = [helper.make_node("ScatterND", ["x", "nd", "u"], ["snd"], reduction=reduction),
             helper.make_node("ScatterElements", ["e", "el", "v"], ["sel"], axis=1, reduction=reduction),
             helper.make_node("ScatterElements", ["e", "el", "v"], ["sel0"], axis=0, reduction=reduction)]
    inits["el"] = inits["el"] % 2  # axis 1 has 2 columns: keep it in range for both axes
    inits["el"][1, 0] = -1 if not repeat else inits["el"][1, 0]
    _parity(nodes, feed, ["snd", "sel", "sel0"], inits)


def test_one_hot_float_and_negative_indices():
    """A fractional float index selects nothing in onnxruntime; -1 is the last position."""
    feed = {"i": np.array([[0.0, 2.7], [-1.0, 3.0], [-4.0, 5.0]], np.float32)}
    inits = {"depth": np.array(4, np.float32), "values": np.array([-2.0, 5.0], np.float32),
             "idepth": np.array(4, np.int64), "ivalues": np.array([0, 1], np.int64)}
    nodes = [helper.make_node("OneHot", ["i", "depth", "values"], ["h"], axis=1),
             helper.make_node("Cast", ["i"], ["i64"], to=7),
             helper.make_node("OneHot", ["i64", "idepth", "ivalues"], ["hi"], axis=-1)]
    _parity(nodes, feed, ["h", "hi"], inits, opset=11, expect_ops=("equal", "select"))
