"""LSTM, GRU and RNN unrolled into MIL, run by the reference executor against onnxruntime."""

import numpy as np
import pytest
from onnx import helper

from bridge.base.errors import ConversionError
from bridge.converters.coreml.build import build_program
from bridge.converters.coreml.preflight import unsupported_ops
from tests.converters.coreml.harness import graph, onnxruntime, parity, run_reference

coremltools = pytest.importorskip("coremltools")
RNG = np.random.default_rng(0)
T, B, I, H = 5, 2, 3, 4  # noqa: E741 - steps, batch, input and hidden sizes, as ONNX names them


def _w(*shape):
    return (RNG.standard_normal(shape) * 0.5).astype(np.float32)


def test_every_option_of_the_three_cells():
    """Both directions, biases, peepholes, initial states, clip, per-sequence lengths (the reverse
    direction then starts at each sequence's own end), linear_before_reset both ways, a chosen
    activation; every output."""
    x = RNG.standard_normal((T, B, I)).astype(np.float32)
    inits = {"W": _w(2, 4 * H, I), "R": _w(2, 4 * H, H), "B": _w(2, 8 * H), "P": _w(2, 3 * H), "h0": _w(2, B, H),
             "c0": _w(2, B, H), "lens": np.array([5, 3], np.int32), "Wg": _w(2, 3 * H, I), "Rg": _w(2, 3 * H, H),
             "Bg": _w(2, 6 * H), "Wr": _w(1, H, I), "Rr": _w(1, H, H), "Br": _w(1, 2 * H)}
    nodes = [helper.make_node("LSTM", ["x", "W", "R", "B", "lens", "h0", "c0", "P"], ["y", "yh", "yc"],
                              hidden_size=H, direction="bidirectional", clip=1.5),
             helper.make_node("LSTM", ["x", "W", "R"], ["y2"], hidden_size=H, direction="bidirectional"),
             helper.make_node("GRU", ["x", "Wg", "Rg", "Bg", "lens"], ["gy", "gyh"], hidden_size=H,
                              direction="bidirectional"),
             helper.make_node("GRU", ["x", "Wg", "Rg", "Bg"], ["gy2"], hidden_size=H, direction="bidirectional",
                              linear_before_reset=1),
             helper.make_node("RNN", ["x", "Wr", "Rr", "Br"], ["ry", "ryh"], hidden_size=H, direction="reverse",
                              activations=["Relu"])]
    outputs = ["y", "yh", "yc", "y2", "gy", "gyh", "gy2", "ry", "ryh"]
    parity(graph(nodes, {"x": x}, outputs, inits, opset=14), {"x": x}, expect_ops=("matmul", "select"),
           rtol=1e-4, atol=1e-5)


def test_run_time_states_and_lengths():
    """The initial states and the lengths fed at run time (a streaming model's state)."""
    feed = {"x": RNG.standard_normal((T, B, I)).astype(np.float32), "h0": _w(1, B, H), "c0": _w(1, B, H),
            "lens": np.array([2, 5], np.int32)}
    inits = {"W": _w(1, 4 * H, I), "R": _w(1, 4 * H, H), "B": _w(1, 8 * H)}
    nodes = [helper.make_node("LSTM", ["x", "W", "R", "B", "lens", "h0", "c0"], ["y", "yh", "yc"], hidden_size=H,
                              direction="reverse")]
    parity(graph(nodes, feed, ["y", "yh", "yc"], inits, opset=14), feed, rtol=1e-4, atol=1e-5)


def test_batch_first_layout():
    """layout=1. onnxruntime 1.23 refuses it and ONNX's reference evaluator mishandles its states,
    so the reference is onnxruntime on the same cell in layout 0 between transposes."""
    feed = {"x": RNG.standard_normal((B, T, I)).astype(np.float32), "h0": _w(B, 2, H)}
    inits = {"W": _w(2, 3 * H, I), "R": _w(2, 3 * H, H), "B": _w(2, 6 * H)}
    gru = {"hidden_size": H, "direction": "bidirectional"}
    batch_first = graph([helper.make_node("GRU", ["x", "W", "R", "B", "", "h0"], ["y", "yh"], layout=1, **gru)],
                        feed, ["y", "yh"], inits, opset=14)
    time_first = graph([helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
                        helper.make_node("Transpose", ["h0"], ["h0t"], perm=[1, 0, 2]),
                        helper.make_node("GRU", ["xt", "W", "R", "B", "", "h0t"], ["yt", "yht"], **gru),
                        helper.make_node("Transpose", ["yt"], ["y"], perm=[2, 0, 1, 3]),
                        helper.make_node("Transpose", ["yht"], ["yh"], perm=[1, 0, 2])],
                       feed, ["y", "yh"], inits, opset=14)
    got = run_reference(batch_first, feed)
    for name, want in onnxruntime(time_first, feed).items():
        np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.filterwarnings("ignore")  # the TorchScript exporter warns of its removal
def test_torch_two_layer_bidirectional_lstm():
    import io

    import onnx
    import torch

    torch.manual_seed(0)
    module = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True, batch_first=True)
    x = torch.randn(B, T, I)
    buffer = io.BytesIO()
    torch.onnx.export(module, (x,), buffer, input_names=["x"], output_names=["y", "h", "c"], opset_version=17,
                      dynamo=False)
    want = dict(zip(["y", "h", "c"], (t.detach().numpy() for t in (module(x)[0], *module(x)[1])), strict=True))
    parity(onnx.load_from_string(buffer.getvalue()), {"x": x.numpy()}, want=want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("attributes, why", [
    ({"activations": ["HardSigmoid", "Tanh", "Tanh"], "activation_alpha": [0.3]}, "activation_alpha"),
    ({"input_forget": 1}, "input_forget"),
    ({"activations": ["Sigmoid", "ScaledTanh", "Tanh"]}, "ScaledTanh"),
])
def test_refused_before_converting(attributes, why):
    x = RNG.standard_normal((T, B, I)).astype(np.float32)
    node = helper.make_node("LSTM", ["x", "W", "R"], ["y"], hidden_size=H, **attributes)
    model = graph([node], {"x": x}, ["y"], {"W": _w(1, 4 * H, I), "R": _w(1, 4 * H, H)}, opset=14)
    [refused] = unsupported_ops(model)
    assert refused.op_type == "LSTM" and why in refused.reason
    with pytest.raises(ConversionError, match=why):
        build_program(model, coremltools.target.iOS16)


@pytest.mark.filterwarnings("ignore:Some dimensions in the input shape are unknown")
def test_run_time_sequence_length_is_refused():
    x = RNG.standard_normal((T, B, I)).astype(np.float32)
    node = helper.make_node("GRU", ["x", "W", "R"], ["y"], hidden_size=H)
    model = graph([node], {"x": x}, ["y"], {"W": _w(1, 3 * H, I), "R": _w(1, 3 * H, H)}, opset=14)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "time"
    with pytest.raises(ConversionError, match="run-time sequence length"):
        build_program(model, coremltools.target.iOS16)
