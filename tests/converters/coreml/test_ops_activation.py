"""Activations, including PReLU's slope shapes and both Softmax semantics (opset < 13 and >= 13)."""

import numpy as np
import pytest
from onnx import helper

from tests.converters.coreml.harness import check, export_torch, graph, lower, lowered_three_ways

coremltools = pytest.importorskip("coremltools")
RNG = np.random.default_rng(1)


def _ops(program) -> set[str]:
    return {op.op_type for op in program.functions["main"].operations}


def test_pointwise_activations(monkeypatch):
    x = np.concatenate([RNG.uniform(-4, 4, 30), [-3.0, 0.0, 1.0, 3.0]]).astype(np.float32).reshape(2, 17)
    plain = ["Relu", "Sigmoid", "Tanh", "Softplus", "Softsign", "LeakyRelu", "Elu", "Selu", "HardSigmoid", "HardSwish",
             "Mish", "ThresholdedRelu"]
    nodes = [helper.make_node(op, ["x"], [op]) for op in plain]
    nodes += [helper.make_node("LeakyRelu", ["x"], ["leaky"], alpha=0.3),
              helper.make_node("Elu", ["x"], ["elu"], alpha=0.5),
              helper.make_node("Selu", ["x"], ["selu"], alpha=1.5, gamma=2.0),
              helper.make_node("HardSigmoid", ["x"], ["hsig"], alpha=0.25, beta=0.4),
              # x == alpha exactly: ONNX gives 0 there, MIL's thresholded_relu would keep x.
              helper.make_node("ThresholdedRelu", ["x"], ["thr"], alpha=3.0)]
    outs = [*plain, "leaky", "elu", "selu", "hsig", "thr"]
    program = lowered_three_ways(monkeypatch, nodes, {"x": x}, outs, opset=18, atol=1e-5)
    assert {"sigmoid_hard", "softplus", "elu", "leaky_relu", "select"} <= _ops(program)


def test_gelu_opset20_exact_and_tanh(monkeypatch):
    x = RNG.uniform(-4, 4, (3, 8)).astype(np.float32)
    nodes = [helper.make_node("Gelu", ["x"], ["exact"]), helper.make_node("Gelu", ["x"], ["tanh"], approximate="tanh")]
    program = lowered_three_ways(monkeypatch, nodes, {"x": x}, ["exact", "tanh"], opset=20, atol=1e-5)
    assert "gelu" in _ops(program)


def test_prelu_slope_shapes(monkeypatch):
    """Per-channel (C,1,1) and (1,C,1,1) slopes become MIL prelu, one slope leaky_relu, and other
    broadcasts (over the last axis, or per channel of a rank-3 input) a select."""
    x4 = RNG.uniform(-2, 2, (2, 3, 4, 5)).astype(np.float32)
    x3 = RNG.uniform(-2, 2, (2, 3, 5)).astype(np.float32)
    slopes = {"c11": RNG.uniform(0, 1, (3, 1, 1)), "n_c11": RNG.uniform(0, 1, (1, 3, 1, 1)), "one": np.array([0.2]),
              "last": RNG.uniform(0, 1, (5,)), "c1": RNG.uniform(0, 1, (3, 1))}
    slopes = {k: v.astype(np.float32) for k, v in slopes.items()}
    cases = [("x4", "c11"), ("x4", "n_c11"), ("x4", "one"), ("x4", "last"), ("x3", "c1"), ("x3", "last")]
    nodes = [helper.make_node("PRelu", [x, s], [f"{x}_{s}"]) for x, s in cases]
    program = lowered_three_ways(monkeypatch, nodes, {"x4": x4, "x3": x3}, [n.output[0] for n in nodes],
                                 initializers=slopes)
    assert {"prelu", "leaky_relu", "select"} <= _ops(program)


def test_prelu_with_runtime_slope():
    x, slope = RNG.standard_normal((2, 3, 4)).astype(np.float32), RNG.standard_normal((3, 1)).astype(np.float32)
    check(graph([helper.make_node("PRelu", ["x", "s"], ["y"])], {"x": x, "s": slope}, ["y"]), {"x": x, "s": slope},
          expect_ops=("select",))


def _softmax_nodes(axes):
    nodes = []
    for op in ("Softmax", "LogSoftmax"):
        for axis in axes:
            kwargs = {} if axis is None else {"axis": axis}
            nodes.append(helper.make_node(op, ["x"], [f"{op}_{axis}".replace("-", "m")], **kwargs))
    return nodes


@pytest.mark.parametrize("opset", [11, 13])
def test_softmax_semantics_by_opset(monkeypatch, opset):
    """Opset 11 flattens at `axis` (default 1) and normalises over everything after it; opset 13
    normalises over `axis` alone (default -1). The -80 logits check LogSoftmax does not take log(0)."""
    x = RNG.uniform(-3, 3, (2, 3, 4)).astype(np.float32)
    x[0, 0, 0] = -80.0
    nodes = _softmax_nodes([None, 0, 1, -1])
    program = lowered_three_ways(monkeypatch, nodes, {"x": x}, [n.output[0] for n in nodes], opset=opset, atol=1e-5)
    assert {"softmax", "reduce_log_sum_exp"} <= _ops(program)


def test_torch_activations():
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.Sequential(nn.GELU(), nn.Hardswish(), nn.PReLU(3), nn.GELU(approximate="tanh"),
                                        nn.Softmax(dim=1))

        def forward(self, x):
            return self.layers(x), torch.log_softmax(x, dim=-1)

    module = Model()
    with torch.no_grad():
        module.layers[2].weight.uniform_()  # distinct slopes, or coremltools turns prelu into leaky_relu
    model = export_torch(torch, module, torch.randn(1, 3, 4, 4))
    assert {"Erf", "HardSwish", "PRelu", "Softmax", "LogSoftmax"} <= {n.op_type for n in model.graph.node}
    # coremltools' passes fuse the exported Erf pattern back into one gelu op.
    check(model, {"x": RNG.standard_normal((1, 3, 4, 4)).astype(np.float32)},
          expect_ops=("gelu", "sigmoid_hard", "prelu", "softmax", "reduce_log_sum_exp"))


def test_fp16_model_converts():
    """Float attributes and constants take x's dtype: MIL refuses fp32 operands next to fp16 ones.
    (onnxruntime's CPU kernels lack fp16 for several of these ops, so only the conversion is checked.)"""
    x = np.zeros((1, 3, 4, 4), np.float16)
    nodes = [helper.make_node("LeakyRelu", ["x"], ["a"], alpha=0.2), helper.make_node("Elu", ["a"], ["b"]),
             helper.make_node("HardSigmoid", ["b"], ["c"]), helper.make_node("HardSwish", ["c"], ["d"]),
             helper.make_node("PRelu", ["d", "slope"], ["e"]), helper.make_node("PRelu", ["e", "wide"], ["f"]),
             helper.make_node("Selu", ["f"], ["g"]), helper.make_node("ThresholdedRelu", ["g"], ["h"]),
             helper.make_node("Neg", ["h"], ["i"]), helper.make_node("Reciprocal", ["i"], ["j"]),
             helper.make_node("Clip", ["j", "lo", "hi"], ["k"]), helper.make_node("Mean", ["k", "j"], ["l"]),
             helper.make_node("Softmax", ["l"], ["y"], axis=1)]
    inits = {"slope": np.full((3, 1, 1), 0.1, np.float16), "wide": np.full((4,), 0.1, np.float16),
             "lo": np.array(-1, np.float16), "hi": np.array(1, np.float16)}
    built, program = lower(graph(nodes, {"x": x}, ["y"], inits, opset=14))
    assert built.dtypes[built.outputs["y"]] == "fp16"


def test_celu_shrink_hardmax():
    """Run by the reference executor: Celu, both Shrinks (x at exactly +-lambd gives 0), Hardmax
    over one axis (opset 13) and over the flattened trailing axes (opset 11), ties to the first."""
    from tests.converters.coreml.harness import parity

    x = np.concatenate([RNG.uniform(-4, 4, 20), [1.5, -1.5, 0.0, 2.0]]).astype(np.float32).reshape(2, 3, 4)
    x[1, 2, :2] = 9.0  # a tie for the maximum
    nodes = [helper.make_node("Celu", ["x"], ["celu"], alpha=2.0), helper.make_node("Celu", ["x"], ["celu1"]),
             helper.make_node("Shrink", ["x"], ["hard"], lambd=1.5),
             helper.make_node("Shrink", ["x"], ["soft"], lambd=1.5, bias=1.5)]
    outputs = [n.output[0] for n in nodes]
    parity(graph(nodes, {"x": x}, outputs, opset=12), {"x": x}, expect_ops=("elu", "select"), rtol=1e-5, atol=1e-6)
    for opset, axes in ((13, (0, 1, -1)), (11, (0, 1, 2))):
        hard = [helper.make_node("Hardmax", ["x"], [f"h{a}"], axis=a) for a in axes]
        parity(graph(hard, {"x": x}, [n.output[0] for n in hard], opset=opset), {"x": x},
               expect_ops=("reduce_argmax",), rtol=0, atol=0)
