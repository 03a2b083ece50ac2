"""Reductions: axes as attribute (before opset 18; ReduceSum before 13) and as input, keepdims both
ways, negative and multiple axes, reduce-all, noop_with_empty_axes, integer inputs."""

import numpy as np
import pytest
from onnx import helper

from bridge.base.errors import ConversionError
from tests.converters.coreml.harness import check, export_torch, graph, lower, lowered_three_ways

coremltools = pytest.importorskip("coremltools")
RNG = np.random.default_rng(2)
REDUCE = ["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
          "ReduceLogSumExp", "ReduceSumSquare", "ReduceLogSum"]
AXES = {"last": [-1], "pair": [0, 2], "all": None}


def _nodes(axes_as_input: bool, ops=REDUCE):
    """Every op x every axes choice x keepdims; axes come from initializers named after AXES keys."""
    nodes = []
    for op in ops:
        for key, axes in AXES.items():
            for keep in (0, 1):
                out = f"{op}_{key}_{keep}"
                if axes_as_input:
                    nodes.append(helper.make_node(op, ["x", key] if axes else ["x"], [out], keepdims=keep))
                else:
                    nodes.append(helper.make_node(op, ["x"], [out], keepdims=keep, **({"axes": axes} if axes else {})))
    return nodes


def _axes_inits():
    return {key: np.array(axes, np.int64) for key, axes in AXES.items() if axes}


@pytest.mark.parametrize("opset", [13, 18])
def test_reductions(monkeypatch, opset):
    """Opset 13: axes are attributes, except ReduceSum's input; opset 18: inputs for every op."""
    x = RNG.uniform(0.2, 1.5, (2, 3, 4)).astype(np.float32)
    nodes = [n for n in _nodes(opset >= 18) if n.op_type != "ReduceSum"]
    nodes += _nodes(True, ["ReduceSum"])
    program = lowered_three_ways(monkeypatch, nodes, {"x": x}, [n.output[0] for n in nodes], opset=opset,
                                 initializers=_axes_inits(), rtol=1e-5, atol=1e-5)
    emitted = {op.op_type for op in program.functions["main"].operations}
    assert {"reduce_mean", "reduce_l2_norm", "reduce_log_sum_exp", "reduce_log_sum"} <= emitted


def test_empty_axes_noop_or_reduce_all(monkeypatch):
    x = RNG.standard_normal((2, 3)).astype(np.float32)
    nodes = [helper.make_node("ReduceSum", ["x", "none"], ["noop"], noop_with_empty_axes=1),
             helper.make_node("ReduceMax", ["x", "none"], ["all"], keepdims=0),
             # (onnxruntime 1.23 fails ReduceMean with noop_with_empty_axes=1 and no axes input at all)
             helper.make_node("ReduceMean", ["x", "none"], ["noop2"], noop_with_empty_axes=1),
             helper.make_node("ReduceMean", ["x"], ["all2"])]
    lowered_three_ways(monkeypatch, nodes, {"x": x}, ["noop", "all", "noop2", "all2"], opset=18,
                       initializers={"none": np.zeros((0,), np.int64)})


def test_integer_reductions(monkeypatch):
    x = RNG.integers(-5, 6, (3, 4)).astype(np.int64)
    nodes = [helper.make_node(op, ["x", "axis"], [op], keepdims=0) for op in ("ReduceSum", "ReduceMax", "ReduceMin",
                                                                               "ReduceProd")]
    lowered_three_ways(monkeypatch, nodes, {"x": x}, [n.output[0] for n in nodes], opset=18,
                       initializers={"axis": np.array([1], np.int64)})


def test_axes_known_only_at_run_time_are_refused():
    x, axes = np.zeros((2, 3), np.float32), np.array([1], np.int64)
    model = graph([helper.make_node("ReduceSum", ["x", "axes"], ["y"])], {"x": x, "axes": axes}, ["y"], opset=13)
    with pytest.raises(ConversionError, match="axes must be known"):
        lower(model)


def test_torch_reductions():
    torch = pytest.importorskip("torch")

    class Model(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3), keepdim=True), x.sum(-1), x.amax(1), torch.linalg.vector_norm(x, dim=1)

    model = export_torch(torch, Model(), torch.randn(1, 3, 4, 5))
    check(model, {"x": RNG.standard_normal((1, 3, 4, 5)).astype(np.float32)},
          expect_ops=("reduce_mean", "reduce_sum", "reduce_max"))
