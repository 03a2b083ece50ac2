"""inspect, doctor and the Python API, through Typer's runner and in-process calls."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from bridge.cli import app
from tests.conftest import SAMPLES, write_module

runner = CliRunner()


def _onnx(path, op="Erf"):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"), helper.make_node(op, ["h"], ["y"], name="act")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], initializer=[w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 24 if op == "Swish" else 17)]), path)
    return path


def test_inspect_onnx_lists_ops_and_lane_support(tmp_path):
    r = runner.invoke(app, ["inspect", str(_onnx(tmp_path / "m.onnx", "Relu")), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["ops"] == {"MatMul": 1, "Relu": 1}
    assert info["inputs"] == [{"name": "x", "shape": [1, 4], "dtype": "float32"}]
    assert info["lanes"]["tflite"] == {"supported": True, "unsupported_ops": []}


def test_inspect_names_ops_a_lane_lacks(tmp_path):
    r = runner.invoke(app, ["inspect", str(_onnx(tmp_path / "m.onnx", "Swish")), "--json"])
    info = json.loads(r.output)
    tflite = info["lanes"]["tflite"]
    assert tflite["unsupported_ops"] == ["Swish"] and tflite["nodes"] == {"Swish": ["act"]}
    assert "Swish" in tflite["reasons"]["Swish"]


def test_inspect_names_what_the_coreml_lane_refuses_and_why(tmp_path):
    """Before anything converts: an op with no converter, and one whose converter exists but not
    for this attribute value, each with its nodes and reason."""
    pytest.importorskip("coremltools")
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Det", ["x"], ["d"], name="det"), helper.make_node("LRN", ["x"], ["y"], size=2, name="n")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 3, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 3, 3]),
                           helper.make_tensor_value_info("d", TensorProto.FLOAT, [1, 3])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    info = json.loads(runner.invoke(app, ["inspect", str(tmp_path / "m.onnx"), "--json"]).output)
    coreml = info["lanes"]["coreml"]
    assert coreml["unsupported_ops"] == ["Det", "LRN"] and coreml["nodes"] == {"Det": ["det"], "LRN": ["n"]}
    assert coreml["reasons"] == {
        "Det": "no Core ML converter", "LRN": "size=2 (even sizes centre the window differently in Core ML)"}
    text = runner.invoke(app, ["inspect", str(tmp_path / "m.onnx")]).output
    assert ("Det (no Core ML converter), LRN (size=2 (even sizes centre the window differently in Core ML))"
            in " ".join(text.split()))


def test_inspect_keeps_each_nodes_reason_when_one_op_is_refused_for_several(tmp_path):
    pytest.importorskip("coremltools")
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("LRN", ["x"], ["a"], size=2, name="n2"),
             helper.make_node("LRN", ["a"], ["y"], size=4, name="n4")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 3, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 3, 3])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    coreml = json.loads(runner.invoke(app, ["inspect", str(tmp_path / "m.onnx"), "--json"]).output)["lanes"]["coreml"]
    assert coreml["nodes"] == {"LRN": ["n2", "n4"]}
    assert coreml["reasons"]["LRN"] == ("size=2 (even sizes centre the window differently in Core ML) (n2); "
                                        "size=4 (even sizes centre the window differently in Core ML) (n4)")


def test_doctor_lists_backends():
    r = runner.invoke(app, ["doctor"])
    assert r.exit_code == 0
    assert "onnx2tf" in r.output and "2.6.9" in r.output and "tflite lane" in r.output


@pytest.mark.slow
def test_python_api_returns_the_report(tmp_path):
    from bridge import ConvertOptions, convert

    model = write_module(tmp_path / "lin.py", """
        import torch
        def make():
            torch.manual_seed(0)
            return torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.Tanh()), torch.randn(1, 6)
        """)
    report = convert(f"{model}:make", ConvertOptions(targets=("onnx",), out=str(tmp_path / "out")))
    assert report.passed and report.exit_code == 0
    assert report.artifacts[0].parity.outputs["output"]["rel_l2"] <= 1e-6
    assert json.loads((tmp_path / "out" / "report.json").read_text())["passed"] is True


@pytest.mark.slow
def test_inspect_torch_source_exports_first():
    r = runner.invoke(app, ["inspect", f"{SAMPLES}/shapes_cnn.py:load", "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["framework"] == "torch" and info["inputs"][0]["shape"] == [1, 3, 64, 64]
    assert "Conv" in info["ops"] and info["lanes"]["tflite"]["supported"]


@pytest.mark.parametrize("args, code", [(["--version"], 0), (["convert", "--help"], 0),
                                        (["inspect", "missing.onnx"], 2), (["convrt"], 2)])
def test_console_script_exits_as_main_does(tmp_path, args, code):
    """The console script skips the interpreter's finalization: the same bytes on both streams and
    the same exit code as `main` leaving the ordinary way."""
    import os
    import subprocess
    import sys

    from tests.conftest import BRIDGE

    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # piped streams buffer, as for users
    fast = subprocess.run([str(BRIDGE), *args], capture_output=True, text=True, cwd=tmp_path, env=env)
    slow = subprocess.run([sys.executable, "-c", "import sys; from bridge.cli import main; main(sys.argv[1:])", *args],
                          capture_output=True, text=True, cwd=tmp_path, env=env)
    assert (fast.returncode, slow.returncode) == (code, code)
    assert fast.stdout == slow.stdout and fast.stderr == slow.stderr
    assert fast.stdout or fast.stderr


@pytest.mark.parametrize("args, said", [
    (["convert", "m.onnx", "--bogus"], "No such option: --bogus (see bridge convert --help)"),
    (["convert", "m.onnx", "--quantise", "tflite=fp16"], "No such option: --quantise (did you mean --quantize?)"),
    (["batch", "m.toml", "--job", "2"], "No such option: --job (did you mean --jobs?)"),
])
def test_an_unknown_option_offers_only_close_names(tmp_path, args, said):
    """Click offered `--out, --verbose` for `--bogus` (its cutoff counts the dashes)."""
    from tests.conftest import bridge

    r = bridge(*args, cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and said in r.stderr, r.stderr


@pytest.mark.parametrize("args, said", [
    (["convrt", "m.onnx"], "No such command 'convrt'. Did you mean 'convert'?"),
    (["--help"], "batch"),
])
def test_every_command_is_there_when_the_line_names_none(tmp_path, args, said):
    """The CLI loads only the command a line starts with (each command's module imports what it
    runs with); a line that names none gets them all: help lists every one, a typo is offered the
    close name."""
    from tests.conftest import bridge

    r = bridge(*args, cwd=tmp_path)
    assert r.returncode == (2 if args[0] != "--help" else 0)
    text = r.stderr if r.returncode else r.stdout
    assert said in text, text
    if args == ["--help"]:
        assert all(f" {c} " in text for c in ("convert", "validate", "debug", "inspect", "batch", "doctor")), text
