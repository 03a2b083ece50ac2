"""Hostile and broken model files: refused with exit 2 and one line naming the file and the reason,
before anything runs their code or reads outside the model's folder. Nothing they carry runs (the
canaries stay absent), no artifact appears, and what was already in --out survives.

The corpus is built here, in tmp_path: pickles whose payload touches a canary, a Keras Lambda that
does the same, torch.export archives doctored the way an attacker would, and ONNX files whose
external data points where it must not.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import bridge, report

KEEP = "keep.txt"


def _out(tmp_path: Path) -> Path:
    """An --out folder that already holds a file of the user's."""
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    (out / KEEP).write_text("precious")
    return out


def _refused(r: subprocess.CompletedProcess, *needles: str, out: Path | None = None) -> str:
    """Exit 2, one line on stderr holding every needle, no traceback; --out untouched."""
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    if out is not None:
        assert sorted(os.listdir(out)) == [KEEP], "no artifact, report or work folder may appear"
        assert (out / KEEP).read_text() == "precious"
    return lines[0]


def _convert(path: Path, out: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return bridge("convert", path, "--target", "onnx", "--out", out, *args, timeout=timeout)


# ---------------------------------------------------------------------------------------- torch


class _Touch:
    """Unpickling this creates `canary`: what a malicious checkpoint does, harmlessly."""

    def __init__(self, canary: Path):
        self.canary = canary

    def __reduce__(self):
        return (Path(self.canary).touch, ())


@pytest.mark.slow
@pytest.mark.parametrize("name, legacy", [("model.pth", False), ("model.onnx", False), ("model.bin", False),
                                          ("old.pt", True)])
def test_pickle_payload_never_runs(tmp_path, name, legacy):
    """Told by content, not name: a torch pickle called .onnx or .bin is still a pickle."""
    torch = pytest.importorskip("torch")
    canary = tmp_path / "CANARY"
    path = tmp_path / name
    torch.save({"weight": torch.zeros(2), "payload": _Touch(canary)}, path,
               _use_new_zipfile_serialization=not legacy)
    out = _out(tmp_path)
    line = _refused(_convert(path, out), str(path), "--trust-code", "unpickling it can run any code", out=out)
    assert "getattr" in line, "the message names what the pickle would call"
    assert not canary.exists()


@pytest.mark.slow
def test_bare_state_dict_asks_for_an_entrypoint(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "weights.pt"
    torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    out = _out(tmp_path)
    _refused(_convert(path, out), str(path), "state dict", "Python entrypoint", "file.py:make_model", out=out)


def _pt2(tmp_path: Path, torch, *, dynamic: bool = False) -> Path:
    class Double(torch.nn.Module):
        def forward(self, x):
            return x * 2

    x = torch.randn(2, 3)
    shapes = {"x": {0: torch.export.Dim("batch", min=2, max=64)}} if dynamic else None
    path = tmp_path / "clean.pt2"
    torch.export.save(torch.export.export(Double(), (x,), dynamic_shapes=shapes), path)
    return path


def _rewrite_zip(src: Path, dst: Path, member: str, edit) -> Path:
    """Copy an archive, passing the bytes of the member whose name ends with `member` through `edit`."""
    edited = 0
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith(member):
                data, edited = edit(data), edited + 1
            zout.writestr(info, data)
    assert edited == 1, f"torch changed its archive layout ({member}): rebuild this attack"
    return dst


@pytest.mark.slow
@pytest.mark.parametrize("attack", ["pickled-sample-inputs", "shape-expression", "torchscript"])
def test_code_carrying_torch_files_need_trust_code(tmp_path, attack):
    """torch.export.load (torch 2.13) falls back to full pickle for sample inputs weights-only
    refuses, and rebuilds symbolic sizes with sympy.sympify, i.e. Python eval: a .pt2 is code."""
    torch = pytest.importorskip("torch")
    canary = tmp_path / "CANARY"
    path = tmp_path / "model.bin"
    if attack == "pickled-sample-inputs":
        buf = io.BytesIO()
        torch.save(((_Touch(canary),), {}), buf)
        _rewrite_zip(_pt2(tmp_path, torch), path, "data/sample_inputs/model.pt", lambda data: buf.getvalue())
        why = "torch.export archive"
    elif attack == "shape-expression":
        def edit(data: bytes) -> bytes:
            text = data.decode()
            symbols = set(re.findall(r"Symbol\('s\d+', positive=True, integer=True\)", text))
            assert symbols, "torch changed how it writes symbols: rebuild this attack"
            for symbol in symbols:
                evil = f"(__import__('pathlib').Path({str(canary)!r}).touch(), {symbol})[1]"
                text = text.replace(symbol, json.dumps(evil)[1:-1])
            return text.encode()

        _rewrite_zip(_pt2(tmp_path, torch, dynamic=True), path, "models/model.json", edit)
        why = "evaluates its shape expressions as Python"
    else:
        torch.jit.save(torch.jit.script(torch.nn.Linear(3, 2)), path)
        why = "TorchScript"
    out = _out(tmp_path)
    _refused(_convert(path, out, "--input", "x:2,3"), str(path), "--trust-code", why, out=out)
    assert not canary.exists()


# ---------------------------------------------------------------------------------------- keras

KERAS_BUILDER = """
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    from pathlib import Path
    import keras

    folder = Path(sys.argv[1])
    x = keras.Input((4,), name="x")
    y = keras.layers.Lambda(lambda t: (__import__("pathlib").Path(CANARY_PATH).touch(), t * 2.0)[1])(x)
    model = keras.Model(x, y)
    model.save(folder / "lambda.keras")
    model.save(folder / "lambda.h5")
    Path(CANARY_PATH).unlink(missing_ok=True)  # building the model ran the lambda once
"""


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory) -> tuple[Path, Path]:
    """Built in a child so TensorFlow stays out of the test process."""
    pytest.importorskip("keras")
    folder = tmp_path_factory.mktemp("keras")
    canary = folder / "CANARY"
    script = folder / "build.py"
    script.write_text(textwrap.dedent(KERAS_BUILDER).replace("CANARY_PATH", repr(str(canary))))
    r = subprocess.run([sys.executable, str(script), str(folder)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert not canary.exists()
    return folder, canary


@pytest.mark.slow
@pytest.mark.parametrize("name, why", [("lambda.keras", "Keras safe mode refused it"), ("lambda.h5", "HDF5")])
def test_keras_lambda_never_runs(tmp_path, keras_files, name, why):
    folder, canary = keras_files
    out = _out(tmp_path)
    _refused(_convert(folder / name, out), name, "--trust-code", why, out=out)
    assert not canary.exists()


# ----------------------------------------------------------------------------------- onnx data


def _external_model(folder: Path, location: str, *, offset: int | None = None, length: int | None = None,
                    in_subgraph: bool = False) -> Path:
    """A 4x4 float MatMul whose weight lives in external data at `location` (optionally inside an
    If branch, where only a walk through subgraphs finds it)."""
    import onnx
    from onnx import TensorProto, helper

    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 4], vals=[])
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", offset), ("length", length)):
        if value is not None:
            entry = w.external_data.add()
            entry.key, entry.value = key, str(value)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    if in_subgraph:
        then = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["t"])], "then", [],
                                 [helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 4])], initializer=[w])
        other = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [],
                                  [helper.make_tensor_value_info("e", TensorProto.FLOAT, [1, 4])])
        nodes = [helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)]
        inputs, inits = [x, helper.make_tensor_value_info("c", TensorProto.BOOL, [])], []
    else:
        nodes, inputs, inits = [helper.make_node("MatMul", ["x", "w"], ["y"])], [x], [w]
    graph = helper.make_graph(nodes, "g", inputs, [y], initializer=inits)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture
def outside(tmp_path) -> Path:
    """A real 64-byte weight file outside the model's folder: a loader that follows the reference reads it."""
    folder = tmp_path / "outside"
    folder.mkdir()
    np.arange(16, dtype=np.float32).tofile(folder / "w.bin")
    return folder


def _layout(case: str, model_dir: Path, outside: Path) -> dict:
    """Files for one hostile case; returns `_external_model` arguments and the reason expected."""
    model_dir.mkdir(parents=True)
    np.arange(16, dtype=np.float32).tofile(model_dir / "w.bin")  # a legitimate file, for range cases
    if case == "parent":  # the target does not exist: a loader would fail on reading, we refuse first
        return {"location": "../secret.bin", "why": "leaves the model's folder"}
    if case == "absolute":
        return {"location": str(outside / "w.bin"), "why": "is an absolute path"}
    if case == "symlinked-file":
        (model_dir / "link.bin").symlink_to(outside / "w.bin")
        return {"location": "link.bin", "why": "is a symlink"}
    if case == "symlinked-folder":
        (model_dir / "weights").symlink_to(outside, target_is_directory=True)
        return {"location": "weights/w.bin", "why": "goes through a symlink (weights)"}
    if case == "past-end":
        return {"location": "w.bin", "offset": 32, "length": 64, "why": "runs past the end"}
    if case == "offset-past-end":
        return {"location": "w.bin", "offset": 100, "why": "lies past the end"}
    if case == "fifo":  # reading a FIFO blocks: the run finishing proves nothing opened it
        os.mkfifo(model_dir / "pipe.bin")
        return {"location": "pipe.bin", "why": "is not a regular file"}
    if case == "missing":
        return {"location": "gone.bin", "why": "cannot be found beside the model"}
    if case == "subgraph":
        return {"location": "../secret.bin", "in_subgraph": True, "why": "leaves the model's folder"}
    raise AssertionError(case)


CASES = ["parent", "absolute", "symlinked-file", "symlinked-folder", "past-end", "offset-past-end", "fifo",
         "missing", "subgraph"]


@pytest.mark.parametrize("case", CASES)
def test_external_data_outside_the_model_is_refused(tmp_path, outside, case):
    args = _layout(case, tmp_path / "model", outside)
    why = args.pop("why")
    path = _external_model(tmp_path / "model", **args)
    out = _out(tmp_path)
    _refused(_convert(path, out, timeout=60), str(path), "tensor 'w'", why, out=out)


@pytest.mark.parametrize("command", ["validate", "inspect"])
@pytest.mark.parametrize("case", ["parent", "symlinked-folder"])
def test_every_command_checks_external_data(tmp_path, outside, command, case):
    """`validate` and `inspect` read ONNX files too (onnxruntime, the Core ML preflight): same check."""
    args = _layout(case, tmp_path / "model", outside)
    why = args.pop("why")
    path = _external_model(tmp_path / "model", **args)
    before = sorted(p.name for p in tmp_path.iterdir())
    if command == "validate":
        source = _external_model(tmp_path / "clean", "w.bin")
        np.arange(16, dtype=np.float32).tofile(tmp_path / "clean" / "w.bin")
        before = sorted(p.name for p in tmp_path.iterdir())
        r = bridge("validate", source, path, "--report", tmp_path / "report.json", timeout=60)
    else:
        r = bridge("inspect", path, timeout=60)
    _refused(r, str(path), why)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.slow
def test_valid_external_data_converts_through_every_lane(tmp_path):
    """An external-data source in a subfolder converts; with the hub's limit lowered, the hub is
    written with external data too and every lane reads it by path."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((64, 32)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), "b")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["a"]),
             helper.make_node("Relu", ["a"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])], initializer=[w, b])
    path = tmp_path / "src" / "small_external.onnx"
    (path.parent / "weights").mkdir(parents=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path,
              save_as_external_data=True, all_tensors_to_one_file=True, location="weights/small.data",
              size_threshold=0)
    from bridge import ConvertOptions, convert

    out = _out(tmp_path)
    result = convert(str(path), ConvertOptions(targets=("onnx", "tflite", "coreml"), out=str(out),
                                               external_data_bytes=0))
    assert result.exit_code == 0, [a.to_json() for a in result.artifacts]
    rep = report(out)
    assert any("external data" in w for w in rep["warnings"]), rep["warnings"]
    assert {a["target"] for a in rep["artifacts"]} == {"onnx", "tflite", "coreml"}
    for a in rep["artifacts"]:
        assert a["parity"]["passed"], (a["target"], a["parity"]["reason"])
    assert (out / KEEP).read_text() == "precious"


@pytest.mark.slow
def test_shipped_external_data_hub_runs_on_its_own(tmp_path):
    """The ONNX artifact ships with its data file; the report hashes both; a later run that needs
    no external data removes the old data file with the old artifact set."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from bridge.base.files import sha256

    w = numpy_helper.from_array(np.ones((64, 64), np.float32), "w")  # 16 KiB: over the 1 KiB inline limit
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], initializer=[w])
    path = tmp_path / "big.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    from bridge import ConvertOptions, convert

    out = tmp_path / "out"
    result = convert(str(path), ConvertOptions(targets=("onnx",), out=str(out), external_data_bytes=0))
    assert result.exit_code == 0, [a.to_json() for a in result.artifacts]
    session = ort.InferenceSession(str(out / "big.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(session.run(None, {"x": np.ones((1, 64), np.float32)})[0], np.full((1, 64), 64.0))
    a = report(out)["artifacts"][0]
    data = out / "big.onnx.data"
    assert a["external_data"] == {"path": "big.onnx.data", "bytes": data.stat().st_size, "sha256": sha256(data)}
    assert data.stat().st_size >= 64 * 64 * 4
    assert a["bytes"] == (out / "big.onnx").stat().st_size + a["external_data"]["bytes"]
    r = bridge("convert", path, "--target", "onnx", "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not data.exists() and "external_data" not in report(out)["artifacts"][0]
    assert sorted(f.name for f in out.iterdir()) == ["big.onnx", "report.html", "report.json"]


# ----------------------------------------------------------------------------- broken and odd


def _cut(data: bytes) -> bytes:
    return data[: len(data) // 2]


@pytest.mark.slow
@pytest.mark.parametrize("kind, why", [
    ("torch-zip", "a damaged zip archive"),
    ("torch-legacy", "a damaged or truncated torch file"),
    ("onnx", "a damaged or truncated ONNX file"),
    ("keras", "a damaged zip archive"),
    ("h5", "Keras cannot load it"),
])
def test_truncated_files(tmp_path, kind, why):
    """Half a file: one line saying so, also when trusted (a damaged file is bad input, not a
    failed conversion)."""
    torch = pytest.importorskip("torch")
    buf = io.BytesIO()
    if kind in ("torch-zip", "torch-legacy"):
        torch.save(torch.nn.Linear(3, 2).state_dict(), buf, _use_new_zipfile_serialization=kind == "torch-zip")
    elif kind == "onnx":
        from onnx import TensorProto, helper, numpy_helper

        w = numpy_helper.from_array(np.ones((64, 64), np.float32), "w")
        graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], initializer=[w])
        buf.write(helper.make_model(graph).SerializeToString())
    elif kind == "keras":
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("config.json", json.dumps({"class_name": "Functional"}))
            z.writestr("metadata.json", "{}")
            z.writestr("model.weights.h5", b"\0" * 4096)
    else:
        buf.write(b"\x89HDF\r\n\x1a\n" + b"\0" * 4096)
    path = tmp_path / f"cut.{kind}"
    path.write_bytes(_cut(buf.getvalue()))
    out = _out(tmp_path)
    _refused(_convert(path, out, "--trust-code"), str(path), why, out=out)


def test_onnx_over_protobufs_limit_is_refused_unparsed(tmp_path):
    """A 2 GB single-file ONNX (sparse: no disk used) cannot be parsed: say why instead of 'damaged'."""
    path = tmp_path / "huge.onnx"
    with path.open("wb") as f:
        f.write(b"\x08\x07")
        f.truncate(2**31)
    out = _out(tmp_path)
    _refused(_convert(path, out, timeout=60), str(path), "2 GB", "save_as_external_data", out=out)


def test_pickle_is_not_torch_specific(tmp_path):
    """A plain Python pickle (not torch.save) that would run code: still a pickle, still refused."""
    canary = tmp_path / "CANARY"
    path = tmp_path / "model.onnx"
    path.write_bytes(pickle.dumps(_Touch(canary), protocol=2))
    out = _out(tmp_path)
    r = _convert(path, out, timeout=120)
    _refused(r, str(path), out=out)
    assert not canary.exists()
