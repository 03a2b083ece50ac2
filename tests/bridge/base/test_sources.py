"""Formats are told by content, never by extension."""

import zipfile

import pytest

from bridge.base.errors import UsageError
from bridge.base.sources import Format, sniff
from tests.conftest import SAMPLES


def test_entrypoints(tmp_path):
    py = tmp_path / "m.py"
    py.write_text("def make(): pass\n")
    ref = sniff(f"{py}:make")
    assert ref.format is Format.PYTHON and ref.attr == "make" and ref.name == "m"
    mod = sniff("os.path:join")
    assert mod.format is Format.PYTHON and mod.module == "os.path" and mod.name == "path"
    with pytest.raises(UsageError, match="no such Python file"):
        sniff(f"{tmp_path}/missing.py:make")


def test_content_not_extension(tmp_path):
    keras = tmp_path / "model.onnx"  # a Keras archive with the wrong name
    with zipfile.ZipFile(keras, "w") as z:
        z.writestr("config.json", "{}")
        z.writestr("metadata.json", "{}")
    assert sniff(str(keras)).format is Format.KERAS
    h5 = tmp_path / "weights.pt"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    assert sniff(str(h5)).format is Format.H5
    tfl = tmp_path / "x.bin"
    tfl.write_bytes(b"\x1c\0\0\0TFL3" + b"\0" * 64)
    assert sniff(str(tfl)).format is Format.TFLITE
    assert sniff(str(SAMPLES / "shapes_keras.keras")).format is Format.KERAS


def test_torch_files_told_apart(tmp_path):
    torch = pytest.importorskip("torch")
    m = torch.nn.Linear(3, 2)
    torch.jit.save(torch.jit.script(m), tmp_path / "ts.pt")
    torch.save(m.state_dict(), tmp_path / "sd.pt")
    torch.export.save(torch.export.export(m, (torch.randn(1, 3),)), tmp_path / "m.pt2")
    assert sniff(str(tmp_path / "ts.pt")).format is Format.TORCHSCRIPT
    assert sniff(str(tmp_path / "sd.pt")).format is Format.TORCH_PICKLE
    assert sniff(str(tmp_path / "m.pt2")).format is Format.TORCH_EXPORT


@pytest.mark.parametrize("content, message", [
    (b"", "the file is empty"),
    (b"\x08\x07garbage-that-is-not-protobuf" * 3, "damaged or truncated ONNX"),
    (b"hello world", "not a model file"),
])
def test_unusable_files(tmp_path, content, message):
    f = tmp_path / "model.onnx"
    f.write_bytes(content)
    with pytest.raises(UsageError, match=message):
        sniff(str(f))


def test_truncated_onnx(tmp_path):
    data = _tiny_onnx()
    f = tmp_path / "cut.onnx"
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(UsageError, match="damaged or truncated ONNX"):
        sniff(str(f))


def _tiny_onnx() -> bytes:
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((64, 64), np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], initializer=[w])
    return helper.make_model(g).SerializeToString()
