"""Normalizations lowered to MIL.

The saved model runs in the Core ML reference executor (`harness.parity`) and is compared with
onnxruntime. Cases share one model per test: every lowering costs a ct.convert.
"""

import numpy as np
import pytest
from onnx import helper

from bridge.base.errors import ConversionError
from bridge.converters.coreml.build import build_program
from tests.converters.coreml.harness import graph, parity

coremltools = pytest.importorskip("coremltools")

RNG = np.random.default_rng(0)


def _randn(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _positive(*shape):
    return RNG.uniform(0.5, 2.0, shape).astype(np.float32)


def _parity(model, feed, expect_ops=(), want=None):
    parity(model, feed, expect_ops=expect_ops, want=want, rtol=1e-4, atol=1e-5)


def _refused(model, why):
    with pytest.raises(ConversionError, match=why):
        build_program(model, coremltools.target.iOS16)


# BatchNormalization -----------------------------------------------------------------------------------
def test_batch_norm_rank_2_to_5():
    feed = {f"x{r}": _randn(2, 3, *[4] * (r - 2)) for r in (2, 3, 4, 5)}
    params = {"scale": _randn(3), "bias": _randn(3), "mean": _randn(3), "var": _positive(3)}
    nodes = [helper.make_node("BatchNormalization", [x, "scale", "bias", "mean", "var"], [f"y{x}"],
                              **({"epsilon": 1e-2} if x == "x4" else {})) for x in feed]
    _parity(graph(nodes, feed, [f"y{x}" for x in feed], params), feed, expect_ops=("batch_norm",))


def test_batch_norm_training_mode_uses_batch_statistics():
    """Each node has its own statistics initializers: onnxruntime 1.23 gives wrong running
    statistics when two training-mode nodes share them."""
    feed = {"x": _randn(2, 3, 4, 5), "flat": _randn(6, 3)}
    params = {f"{p}{i}": f(3) for i in (1, 2) for p, f in (("scale", _randn), ("bias", _randn), ("mean", _randn),
                                                           ("var", _positive))}
    nodes = [helper.make_node("BatchNormalization", ["x", "scale1", "bias1", "mean1", "var1"], ["y", "rm", "rv"],
                              training_mode=1, epsilon=1e-2, momentum=0.8),
             helper.make_node("BatchNormalization", ["flat", "scale2", "bias2", "mean2", "var2"], ["y2", "rm2", "rv2"],
                              training_mode=1)]
    _parity(graph(nodes, feed, ["y", "rm", "rv", "y2", "rm2", "rv2"], params, opset=15), feed,
            expect_ops=("reduce_mean",))


def test_batch_norm_refuses_runtime_statistics():
    feed = {"x": _randn(1, 3, 4, 4), "mean": _randn(3)}
    params = {"scale": _randn(3), "bias": _randn(3), "var": _positive(3)}
    node = helper.make_node("BatchNormalization", ["x", "scale", "bias", "mean", "var"], ["y"])
    _refused(graph([node], feed, ["y"], params), "constant")


# InstanceNormalization ------------------------------------------------------------------------------
def test_instance_norm_rank_3_to_5():
    feed = {f"x{r}": _randn(2, 3, *range(3, r + 1)) for r in (3, 4, 5)}
    nodes = [helper.make_node("InstanceNormalization", [x, "scale", "bias"], [f"y{x}"], epsilon=1e-3) for x in feed]
    model = graph(nodes, feed, [f"y{x}" for x in feed], {"scale": _randn(3), "bias": _randn(3)})
    _parity(model, feed, expect_ops=("instance_norm", "layer_norm"))


# LayerNormalization ---------------------------------------------------------------------------------
def test_layer_norm_axes_and_parameters():
    feed = {"x": _randn(2, 3, 4, 5), "runtime_scale": _randn(5)}
    nodes = [helper.make_node("LayerNormalization", ["x", "s5", "b5"], ["last_axis"]),
             helper.make_node("LayerNormalization", ["x", "s45", "b45"], ["axis_minus_2"], axis=-2, epsilon=1e-3),
             helper.make_node("LayerNormalization", ["x", "s345"], ["axis_1_no_bias"], axis=1),
             helper.make_node("LayerNormalization", ["x", "runtime_scale", "b5"], ["runtime_scale_out"])]
    params = {"s5": _randn(5), "b5": _randn(5), "s45": _randn(4, 5), "b45": _randn(4, 5), "s345": _randn(3, 4, 5)}
    outputs = [n.output[0] for n in nodes]
    _parity(graph(nodes, feed, outputs, params), feed, expect_ops=("layer_norm",))


def test_layer_norm_mean_and_inv_std_outputs():
    """Mean and InvStdDev keep the normalized dims as 1; on a 4-D input over axis 1 and axis 3."""
    feed = {"x": _randn(2, 3, 4, 5)}
    nodes = [helper.make_node("LayerNormalization", ["x", "s345", "b345"], ["y1", "mean1", "inv1"], axis=1),
             helper.make_node("LayerNormalization", ["x", "s5"], ["y3", "mean3", "inv3"], axis=3, epsilon=1e-2),
             helper.make_node("LayerNormalization", ["x", "s5"], ["y_only", "", "inv_only"], axis=-1)]
    params = {"s345": _randn(3, 4, 5), "b345": _randn(3, 4, 5), "s5": _randn(5)}
    outputs = ["y1", "mean1", "inv1", "y3", "mean3", "inv3", "y_only", "inv_only"]
    _parity(graph(nodes, feed, outputs, params), feed, expect_ops=("rsqrt",))


# LRN ------------------------------------------------------------------------------------------------
def test_lrn():
    feed = {"x": _randn(2, 7, 3, 4)}  # onnxruntime runs LRN on rank 4 only
    nodes = [helper.make_node("LRN", ["x"], ["defaults"], size=3),
             helper.make_node("LRN", ["x"], ["custom"], size=5, alpha=0.5, beta=0.6, bias=2.0)]
    _parity(graph(nodes, feed, ["defaults", "custom"]), feed, expect_ops=("local_response_norm",))


def test_lrn_refuses_even_size():
    _refused(graph([helper.make_node("LRN", ["x"], ["y"], size=4)], {"x": _randn(1, 6, 3, 3)}, ["y"]), "odd")


# Exported from torch --------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore")  # the TorchScript exporter warns of its removal and of tracing
def test_torch_norms(tmp_path):
    import onnx
    import torch

    class Norms(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bn, self.bn1d = torch.nn.BatchNorm2d(3), torch.nn.BatchNorm1d(5)
            self.ln, self.inorm = torch.nn.LayerNorm([6, 7]), torch.nn.InstanceNorm2d(3, affine=True)
            for p in [*self.parameters(), *self.buffers()]:
                if p.dtype.is_floating_point:
                    p.data = torch.rand_like(p) + 0.5

        def forward(self, x, v):
            return self.bn(x), self.bn1d(v), self.ln(x), self.inorm(x)

    torch.manual_seed(0)
    module, x, v = Norms().eval(), torch.randn(2, 3, 6, 7), torch.randn(4, 5)
    names = ["bn", "bn1d", "ln", "inorm"]
    path = tmp_path / "norms.onnx"
    torch.onnx.export(module, (x, v), str(path), input_names=["x", "v"], output_names=names, opset_version=17,
                      dynamo=False)
    with torch.no_grad():
        want = dict(zip(names, (t.numpy() for t in module(x, v)), strict=True))
    _parity(onnx.load(str(path)), {"x": x.numpy(), "v": v.numpy()}, want=want,
            expect_ops=("batch_norm", "layer_norm", "instance_norm"))


# GroupNormalization, RMSNormalization, MeanVarianceNormalization -----------------------------------------
@pytest.mark.parametrize("opset", [18, 21])
def test_group_norm(opset):
    """Opset 18 scales per group, opset 21 per channel; a run of ranks 3 and 5 too."""
    feed = {"x": _randn(2, 6, 3, 4), "x3": _randn(2, 4, 5), "x5": _randn(1, 4, 2, 3, 2)}
    size = (lambda c, g: g) if opset == 18 else (lambda c, g: c)
    params = {f"s{c}_{g}": _randn(size(c, g)) for c, g in ((6, 3), (4, 2))}
    params.update({f"b{c}_{g}": _randn(size(c, g)) for c, g in ((6, 3), (4, 2))})
    nodes = [helper.make_node("GroupNormalization", ["x", "s6_3", "b6_3"], ["y"], num_groups=3, epsilon=1e-3),
             helper.make_node("GroupNormalization", ["x3", "s4_2", "b4_2"], ["y3"], num_groups=2),
             helper.make_node("GroupNormalization", ["x5", "s4_2", "b4_2"], ["y5"], num_groups=2)]
    model = graph(nodes, feed, [], params, opset=opset)  # ONNX's shape inference leaves these outputs untyped
    model.graph.output.extend(helper.make_tensor_value_info(y, 1, feed[x].shape) for x, y in
                              (("x", "y"), ("x3", "y3"), ("x5", "y5")))
    # coremltools fuses the rank-4 scale and bias into a batch_norm with variance 1 and its default
    # epsilon 1e-5, which scales by 1/sqrt(1 + 1e-5): a relative error of 5e-6 that is its own
    parity(model, feed, expect_ops=("layer_norm",), rtol=1e-4, atol=1e-4)


def test_rms_norm_and_mean_variance_norm():
    feed = {"x": _randn(2, 3, 4, 5)}
    params = {"s5": _randn(5), "s345": _randn(3, 4, 5)}
    nodes = [helper.make_node("RMSNormalization", ["x", "s5"], ["rms"]),
             helper.make_node("RMSNormalization", ["x", "s345"], ["rms1"], axis=1, epsilon=0.1),
             helper.make_node("MeanVarianceNormalization", ["x"], ["mvn"]),
             helper.make_node("MeanVarianceNormalization", ["x"], ["mvn_last"], axes=[2, 3])]
    outputs = [n.output[0] for n in nodes]
    _parity(graph(nodes, feed, outputs, params, opset=23), feed, expect_ops=("rsqrt", "real_div"))
