"""MatMul and Gemm lowered to MIL.

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


def _parity(model, feed, expect_ops=(), want=None):
    parity(model, feed, expect_ops=expect_ops, want=want, rtol=1e-4, atol=1e-5)


# MatMul ---------------------------------------------------------------------------------------------
def test_matmul_ranks_and_broadcasting():
    feed = {"a2": _randn(3, 4), "a3": _randn(2, 3, 4), "a4": _randn(2, 1, 3, 4), "b4": _randn(1, 5, 4, 2),
            "v": _randn(4)}
    consts = {"w": _randn(4, 6), "w3": _randn(2, 4, 3), "cv": _randn(4), "c1": _randn(3, 4), "c2": _randn(4, 2)}
    pairs = {"mat_mat": ("a2", "w"), "batch_mat": ("a3", "w"), "broadcast_4d": ("a4", "b4"),
             "vec_batch": ("v", "w3"), "vec_mat": ("v", "w"), "batch_vec": ("a3", "v"), "batch_const_vec": ("a3", "cv"),
             "folded": ("c1", "c2")}
    nodes = [helper.make_node("MatMul", list(ab), [name]) for name, ab in pairs.items()]
    _parity(graph(nodes, feed, list(pairs), consts), feed, expect_ops=("matmul",))


def test_matmul_refuses_vector_dot():
    model = graph([helper.make_node("MatMul", ["u", "v"], ["y"])], {"u": _randn(4), "v": _randn(4)}, ["y"])
    with pytest.raises(ConversionError, match="scalar"):
        build_program(model, coremltools.target.iOS16)


# Gemm -----------------------------------------------------------------------------------------------
def test_gemm_with_constant_b_and_row_c_is_one_linear():
    feed = {"a": _randn(3, 4), "at": _randn(4, 3)}
    consts = {"b": _randn(4, 5), "bt": _randn(5, 4), "row": _randn(5), "row2": _randn(1, 5), "one": _randn(1)}
    cases = {"plain": (["a", "b"], {}),
             "row_bias": (["a", "b", "row"], {}),
             "transposed_scaled": (["at", "bt", "row2"], {"transA": 1, "transB": 1, "alpha": 0.5, "beta": 2.0}),
             "scalar_c": (["a", "bt", "one"], {"transB": 1, "beta": -1.0})}
    nodes = [helper.make_node("Gemm", inputs, [name], **a) for name, (inputs, a) in cases.items()]
    _parity(graph(nodes, feed, list(cases), consts), feed, expect_ops=("linear",))


def test_gemm_with_other_c_or_runtime_b():
    feed = {"a": _randn(3, 4), "b": _randn(5, 4), "c": _randn(3, 5)}
    consts = {"wb": _randn(4, 5), "full": _randn(3, 5), "column": _randn(3, 1)}
    cases = {"full_c": (["a", "wb", "full"], {"beta": 0.5}),
             "column_c": (["a", "wb", "column"], {"alpha": 2.0}),
             "runtime_b": (["a", "b"], {"transB": 1, "alpha": 3.0}),
             "runtime_c": (["a", "wb", "c"], {"beta": 0.25})}
    nodes = [helper.make_node("Gemm", inputs, [name], **a) for name, (inputs, a) in cases.items()]
    _parity(graph(nodes, feed, list(cases), consts), feed, expect_ops=("linear", "matmul", "add"))


# Exported from torch --------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore")  # the TorchScript exporter warns of its removal and of tracing
def test_torch_linear_and_matmul(tmp_path):
    import onnx
    import torch

    class Products(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(6, 3)

        def forward(self, x, x3, y3, x4, y4):
            return self.fc(x), self.fc(x3), torch.matmul(x3, y3), torch.matmul(x4, y4)

    torch.manual_seed(0)
    module = Products().eval()
    shapes = [(2, 6), (2, 5, 6), (2, 6, 4), (2, 3, 5, 6), (1, 3, 6, 2)]
    args = tuple(torch.randn(*shape) for shape in shapes)
    inputs, names = ["x", "x3", "y3", "x4", "y4"], ["fc", "fc3", "mm3", "mm4"]
    path = tmp_path / "products.onnx"
    torch.onnx.export(module, args, str(path), input_names=inputs, output_names=names, opset_version=17, dynamo=False)
    with torch.no_grad():
        want = dict(zip(names, (t.numpy() for t in module(*args)), strict=True))
    _parity(onnx.load(str(path)), {n: a.numpy() for n, a in zip(inputs, args, strict=True)}, want=want,
            expect_ops=("linear", "matmul"))
