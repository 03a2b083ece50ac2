"""Conv and ConvTranspose lowered to MIL.

The saved model runs in the Core ML reference executor (`harness.parity`) and is compared with
onnxruntime. That checks our attribute mapping (pads order, SAME splits, output_padding, groups)
against the executor's reading of MIL, not Core ML. Cases share one model per test: every lowering
costs a ct.convert.
"""

import numpy as np
import pytest
from onnx import helper

from bridge.base.errors import ConversionError
from bridge.converters.coreml.build import build_program
from tests.converters.coreml.harness import convert, graph, onnxruntime, parity, run_reference

coremltools = pytest.importorskip("coremltools")
torch = pytest.importorskip("torch")

RNG = np.random.default_rng(0)


def _randn(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _parity(model, feed, expect_ops=()):
    parity(model, feed, expect_ops=expect_ops, rtol=1e-4, atol=1e-4)


# Conv -----------------------------------------------------------------------------------------------
def test_conv_padding_strides_dilations_groups():
    x = _randn(1, 4, 9, 8)
    cases = {
        "defaults": {},
        "asymmetric_pads": {"pads": [1, 0, 2, 1], "strides": [2, 1], "dilations": [1, 2]},
        "same_upper_even_kernel": {"auto_pad": "SAME_UPPER", "strides": [2, 2], "w": "w2"},
        "same_lower_even_kernel": {"auto_pad": "SAME_LOWER", "strides": [2, 3], "w": "w2"},
        "valid": {"auto_pad": "VALID", "strides": [3, 2]},
        "groups": {"group": 2, "w": "wg", "b": "b"},
        "depthwise": {"group": 4, "w": "wd", "pads": [1, 1, 1, 1], "b": "b8"},
    }
    nodes = []
    for name, a in cases.items():
        a = dict(a)
        inputs = ["x", a.pop("w", "w")] + ([a.pop("b")] if "b" in a else [])
        nodes.append(helper.make_node("Conv", inputs, [name], **a))
    weights = {"w": _randn(6, 4, 3, 3), "w2": _randn(6, 4, 2, 2), "wg": _randn(6, 2, 3, 3),
               "wd": _randn(8, 1, 3, 3), "b": _randn(6), "b8": _randn(8)}
    _parity(graph(nodes, {"x": x}, list(cases), weights), {"x": x}, expect_ops=("conv",))


def test_conv_1d_and_3d():
    x1, x3 = _randn(2, 3, 11), _randn(1, 2, 5, 6, 7)
    nodes = [helper.make_node("Conv", ["x1", "w1"], ["c1"], pads=[2, 1], strides=[2], dilations=[2]),
             helper.make_node("Conv", ["x1", "w1"], ["c1_same"], auto_pad="SAME_LOWER", strides=[3]),
             helper.make_node("Conv", ["x3", "w3", "b3"], ["c3"], pads=[1, 0, 1, 0, 1, 1], strides=[1, 2, 2])]
    weights = {"w1": _randn(4, 3, 3), "w3": _randn(3, 2, 3, 2, 3), "b3": _randn(3)}
    feed = {"x1": x1, "x3": x3}
    _parity(graph(nodes, feed, ["c1", "c1_same", "c3"], weights), feed, expect_ops=("conv",))


@pytest.mark.filterwarnings("ignore:Some dimensions in the input shape are unknown")
def test_conv_same_with_spatial_sizes_unknown_until_run_time():
    """SAME then falls back to MIL's own same/same_lower padding."""
    x = _randn(1, 3, 7, 6)
    nodes = [helper.make_node("Conv", ["x", "w"], ["upper"], auto_pad="SAME_UPPER", strides=[2, 2]),
             helper.make_node("Conv", ["x", "w"], ["lower"], auto_pad="SAME_LOWER", strides=[2, 3])]
    model = graph(nodes, {"x": x}, ["upper", "lower"], {"w": _randn(4, 3, 2, 2)})
    for dim, symbol in zip(model.graph.input[0].type.tensor_type.shape.dim[2:], "hw", strict=True):
        dim.dim_param = symbol
    _, ml = converted = convert(model)
    pad_types = [op.pad_type.val for op in ml._mil_program.functions["main"].operations if op.op_type == "conv"]
    assert pad_types == ["same", "same_lower"]
    got = run_reference(model, {"x": x}, converted=converted)
    for name, want in onnxruntime(model, {"x": x}).items():
        np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-4, err_msg=name)


# ConvTranspose --------------------------------------------------------------------------------------
def test_conv_transpose_padding_and_output_size():
    x = _randn(1, 4, 5, 6)
    cases = {
        "defaults": {},
        "pads_and_output_padding": {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]},
        "output_padding_beyond_pads": {"strides": [2, 3], "pads": [1, 0, 0, 0], "output_padding": [1, 2]},
        "output_shape": {"strides": [2, 2], "output_shape": [10, 14]},
        "output_shape_larger_than_full": {"strides": [2, 2], "output_shape": [12, 14]},
        "same_upper": {"strides": [2, 2], "auto_pad": "SAME_UPPER"},
        "same_lower": {"strides": [2, 2], "auto_pad": "SAME_LOWER"},
        "valid": {"strides": [2, 1], "auto_pad": "VALID"},
        "groups_dilations": {"strides": [2, 2], "dilations": [2, 1], "group": 2, "w": "wg", "b": "bg"},
    }
    nodes = []
    for name, a in cases.items():
        a = dict(a)
        inputs = ["x", a.pop("w", "w"), a.pop("b", "b")]
        nodes.append(helper.make_node("ConvTranspose", inputs, [name], **a))
    weights = {"w": _randn(4, 3, 3, 3), "b": _randn(3), "wg": _randn(4, 2, 2, 3), "bg": _randn(4)}
    _parity(graph(nodes, {"x": x}, list(cases), weights), {"x": x}, expect_ops=("conv_transpose", "pad"))


def test_conv_transpose_1d_and_3d():
    x1, x3 = _randn(1, 2, 7), _randn(1, 2, 3, 4, 3)
    nodes = [helper.make_node("ConvTranspose", ["x1", "w1"], ["t1"], strides=[3], pads=[1, 0], output_padding=[2]),
             helper.make_node("ConvTranspose", ["x3", "w3", "b3"], ["t3"], strides=[2, 2, 1], pads=[1, 1, 0, 1, 0, 0],
                              output_padding=[1, 0, 0])]
    weights = {"w1": _randn(2, 3, 4), "w3": _randn(2, 2, 3, 3, 2), "b3": _randn(2)}
    feed = {"x1": x1, "x3": x3}
    _parity(graph(nodes, feed, ["t1", "t3"], weights), feed, expect_ops=("conv_transpose",))


# Refusals -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("op, runtime_input", [("ConvTranspose", "w"), ("Conv", "b")])
def test_refuses_weights_known_only_at_run_time(op, runtime_input):
    x, w, b = _randn(1, 3, 4, 4), _randn(3, 3, 3, 3), _randn(3)
    inputs = {"x": x, runtime_input: {"w": w, "b": b}[runtime_input]}
    model = graph([helper.make_node(op, ["x", "w", "b"], ["y"])], inputs, ["y"],
                  {k: v for k, v in {"w": w, "b": b}.items() if k != runtime_input})
    with pytest.raises(ConversionError, match="constant"):
        build_program(model, coremltools.target.iOS16)


# Exported from torch --------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore")  # the TorchScript exporter warns of its removal and of tracing
def test_torch_conv_and_transposed_conv(tmp_path):
    import onnx

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                 torch.nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1)).eval()
    x = torch.randn(1, 3, 7, 9)
    path = tmp_path / "m.onnx"
    torch.onnx.export(module, (x,), str(path), input_names=["x"], output_names=["y"], opset_version=17, dynamo=False)
    model = onnx.load(str(path))
    feed = {"x": x.numpy()}
    with torch.no_grad():
        np.testing.assert_allclose(onnxruntime(model, feed)["y"], module(x).numpy(), rtol=1e-4, atol=1e-5)
    _parity(model, feed, expect_ops=("conv", "conv_transpose"))
