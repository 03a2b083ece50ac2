"""Sources of every format, dynamic axes, and bad input: exit 2 with a one-line reason."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import artifact, bridge, report, write_module

SEQ_MODEL = """
    import torch
    from torch import nn

    class Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(50, 16)
            self.proj = nn.Linear(16, 16)

        def forward(self, ids):
            h = torch.tanh(self.proj(self.emb(ids)))
            return h.softmax(-1), h.mean(1)

    def make():
        torch.manual_seed(0)
        return Seq().eval(), torch.randint(0, 50, (2, 7))
"""


@pytest.mark.slow
def test_dynamic_axis_validates_at_two_sizes(tmp_path):
    src = write_module(tmp_path / "seq.py", SEQ_MODEL)
    out = tmp_path / "out"
    r = bridge("convert", f"{src}:make", "--target", "onnx", "--target", "tflite", "--dynamic", "ids:1",
               "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = report(out)
    assert rep["source"]["shapes"] == "dynamic"
    ids = rep["source"]["inputs"][0]
    assert ids["name"] == "ids" and ids["dtype"] == "int64" and ids["dynamic_axes"] == [1]
    assert [o["name"] for o in rep["source"]["outputs"]] == ["output_0", "output_1"]
    for a in rep["artifacts"]:
        assert a["parity"]["passed"], a["parity"]["reason"]
        assert a["parity"]["sizes"] == {"ids:1": [7, 14]}
        assert a["parity"]["samples"] == 16
    tfl = artifact(rep, "tflite", "fp32")
    assert tfl["io"]["inputs"][0]["shape"] == [2, -1]


@pytest.mark.slow
@pytest.mark.parametrize("length", [6, 16])
def test_dynamic_sequence_output_layout_follows_the_dynamic_axis(tmp_path, length):
    """`x * w` on [1, T, 16] with T dynamic: onnx2tf 2.x keeps the source layout ([1, -1, 16]; 1.x
    wrote [1, 16, T]). Where the dynamic axis lands decides the layout, also when T = 16 makes both
    layouts look alike (tests/converters/tflite/test_layout.py has the cases 2.x no longer writes)."""
    src = write_module(tmp_path / "scale.py", f"""
        import torch

        class Scale(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.w = torch.nn.Parameter(torch.linspace(-2, 2, 16))

            def forward(self, x):
                return x * self.w

        def make():
            return Scale().eval(), torch.randn(1, {length}, 16)
        """)
    out = tmp_path / "out"
    r = bridge("convert", f"{src}:make", "--target", "tflite", "--dynamic", "x:1", "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    tfl = artifact(report(out), "tflite", "fp32")
    assert tfl["parity"]["sizes"] == {"x:1": [length, 2 * length]}
    assert tfl["parity"]["outputs"]["output"]["rel_l2"] <= 1e-6
    assert tfl["io"]["outputs"][0]["shape"] == [1, -1, 16] and tfl["io"]["outputs"][0]["permutation"] is None


@pytest.mark.slow
def test_old_opset_onnx_file_upgrades_and_converts(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    scale = numpy_helper.from_array(np.ones(4, np.float32) * 0.5, "s")
    bias = numpy_helper.from_array(np.zeros(4, np.float32), "b")
    mean = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "m")
    var = numpy_helper.from_array(np.ones(4, np.float32), "v")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv@0"),
        helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["bn"], name="bn:1"),
        helper.make_node("Relu", ["bn"], ["r"]),
        helper.make_node("Upsample", ["r", "scales"], ["y"], mode="nearest"),
    ]
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    graph = helper.make_graph(nodes, "old", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])],
                              initializer=[w, scale, bias, mean, var, scales])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)], ir_version=4)
    onnx.checker.check_model(model)
    path = tmp_path / "old.onnx"
    onnx.save(model, path)
    out = tmp_path / "out"
    r = bridge("convert", path, "--target", "onnx", "--target", "tflite", "--target", "coreml",
               "--quantize", "coreml=fp16,int8-weights", "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = report(out)
    assert rep["hub"]["opset"] == 17 and len(rep["artifacts"]) == 4
    assert any("opset 9 upgraded to 17" in w for w in rep["warnings"])
    assert all(a["parity"]["passed"] for a in rep["artifacts"])


@pytest.mark.parametrize("args, message", [
    (["nope.onnx"], "nope.onnx: no such file or folder"),
    (["{empty}"], "the file is empty"),
    (["{zip}"], "a zip archive that is not a Keras"),
    (["{junk}"], "not a model file this tool reads"),
    (["{model}", "--target", "android"], "unknown target 'android'"),
    (["{model}", "--quantize", "tflite=int9"], "unknown quantization mode 'int9'"),
    (["{model}", "--target", "tflite", "--quantize", "tflite=palettize-4"], "tflite has no mode palettize-4"),
    (["{model}", "--input", "bogus:1,2"], "no input of that name"),
])
def test_bad_usage_exits_2_with_one_line(tmp_path, args, message):
    import zipfile

    (tmp_path / "empty.onnx").write_bytes(b"")
    with zipfile.ZipFile(tmp_path / "archive.onnx", "w") as z:
        z.writestr("hello.txt", "hi")
    (tmp_path / "junk.pt").write_bytes(b"\x00\x01garbage" * 10)
    model = write_module(tmp_path / "m.py", """
        import torch
        def make():
            return torch.nn.Linear(3, 2), torch.randn(1, 3)
        """)
    subst = {"{empty}": tmp_path / "empty.onnx", "{zip}": tmp_path / "archive.onnx", "{junk}": tmp_path / "junk.pt",
             "{model}": f"{model}:make"}
    r = bridge("convert", *[subst.get(a, a) for a in args], "--out", tmp_path / "out", cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_erf_lands_on_a_builtin(tmp_path):
    """Erf has no TFLite builtin of its own: onnx2tf 1.x needed Flex (Select TF) ops for it, which
    stock runtimes reject. The 2.x lane lowers it to builtins and the file runs on ai-edge-litert.
    (Flex and custom ops a file still needs are refused: tests/converters/tflite/test_preflight.py.)"""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Erf", ["x"], ["y"])], "erf",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])])
    path = tmp_path / "erf.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    r = bridge("convert", path, "--target", "onnx", "--target", "tflite", "--out", tmp_path / "a")
    assert r.returncode == 0, r.stderr
    tfl = artifact(report(tmp_path / "a"), "tflite", "fp32")
    assert tfl["flex_ops"] == [] and tfl["parity"]["outputs"]["y"]["rel_l2"] <= 1e-5
    assert not [op for op in tfl["ops"] if op.startswith("Flex")]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["pt2", "torchscript"])
def test_torch_files(tmp_path, kind):
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 3))
    x = torch.randn(1, 3, 8, 8)
    path = tmp_path / "model.bin"  # the extension says nothing
    args = []
    if kind == "pt2":  # torch.export.load unpickles and evals archive content: trusted files only
        torch.export.save(torch.export.export(model, (x,)), path)
    else:
        torch.jit.save(torch.jit.trace(model, x), path)
        args = ["--input", "input:1,3,8,8"]
    r = bridge("convert", path, "--target", "onnx", *args, "--out", tmp_path / "refused")
    assert r.returncode == 2 and "--trust-code" in r.stderr
    args.append("--trust-code")
    r = bridge("convert", path, "--target", "onnx", *args, "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr[-2000:]
    rep = report(tmp_path / "out")
    assert rep["source"]["format"] == ("torch-export" if kind == "pt2" else "torchscript")
    assert rep["artifacts"][0]["parity"]["outputs"]["output"]["rel_l2"] <= 1e-5
