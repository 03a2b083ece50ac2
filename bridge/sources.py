"""What a SOURCE or ARTIFACT argument is, from its content rather than its name.

Sniffing reads magic bytes and zip directories only: nothing here imports a framework or runs
code from the file. ONNX files are also parsed (protobuf only, no tensor data) so that their
external-data references are checked here, before onnx or onnxruntime reads any of them: every
command sniffs its arguments first, so `convert`, `validate` and `inspect` all get the check.
"""

from __future__ import annotations

import os
import re
import stat
import zipfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath

from bridge.errors import UsageError


class Format(StrEnum):
    ONNX = "onnx"
    PYTHON = "python"  # file.py:callable or package.module:callable
    TORCHSCRIPT = "torchscript"
    TORCH_EXPORT = "torch-export"  # .pt2 from torch.export.save
    TORCH_PICKLE = "torch-pickle"  # torch.save of a module or a state dict
    KERAS = "keras"  # Keras 3 .keras zip
    H5 = "h5"  # Keras HDF5
    SAVED_MODEL = "saved-model"
    TFLITE = "tflite"
    MLPACKAGE = "mlpackage"


FRAMEWORK = {
    Format.ONNX: "onnx",
    Format.TORCHSCRIPT: "torch",
    Format.TORCH_EXPORT: "torch",
    Format.TORCH_PICKLE: "torch",
    Format.KERAS: "keras",
    Format.H5: "keras",
    Format.SAVED_MODEL: "tensorflow",
    Format.TFLITE: "tflite",
    Format.MLPACKAGE: "coreml",
}


@dataclass(frozen=True)
class SourceRef:
    text: str  # as given
    format: Format
    path: Path | None = None  # file, folder, or the .py file of an entrypoint
    attr: str | None = None  # callable name for Python entrypoints
    module: str | None = None  # package.module for module entrypoints

    @property
    def framework(self) -> str | None:
        return FRAMEWORK.get(self.format)

    @property
    def name(self) -> str:
        """A short model name for default output folders."""
        if self.format is Format.PYTHON:  # the file or module, not the callable: shapes_cnn.py:load
            return self.path.stem if self.path else self.module.rsplit(".", 1)[-1]
        assert self.path is not None
        return self.path.name.split(".")[0] or "model"


_ENTRYPOINT = re.compile(r"^(?P<target>[^:]+):(?P<attr>[A-Za-z_][A-Za-z0-9_.]*)$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def sniff(text: str) -> SourceRef:
    """Classify a SOURCE/ARTIFACT argument; unusable input is a `UsageError` with one-line reason."""
    path = Path(text)
    if not path.exists():
        m = _ENTRYPOINT.match(text)
        if m:
            target, attr = m.group("target"), m.group("attr")
            if target.endswith(".py"):
                py = Path(target)
                if not py.is_file():
                    raise UsageError(f"{text}: no such Python file {target}")
                return SourceRef(text, Format.PYTHON, path=py.resolve(), attr=attr)
            if _MODULE.match(target):
                return SourceRef(text, Format.PYTHON, module=target, attr=attr)
        raise UsageError(f"{text}: no such file or folder "
                         "(a Python entrypoint is file.py:callable or package.module:callable)")
    if path.is_dir():
        return SourceRef(text, _sniff_dir(path), path=path.resolve())
    return SourceRef(text, _sniff_file(path), path=path.resolve())


def _sniff_dir(path: Path) -> Format:
    if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
        return Format.SAVED_MODEL
    if (path / "Manifest.json").is_file() and (path / "Data").is_dir():
        return Format.MLPACKAGE
    raise UsageError(f"{path}: a folder that is neither a TensorFlow SavedModel nor a Core ML .mlpackage")


def _sniff_file(path: Path) -> Format:
    size = path.stat().st_size
    if size == 0:
        raise UsageError(f"{path}: the file is empty")
    with path.open("rb") as f:
        head = f.read(64)
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return Format.H5
    if head[4:8] == b"TFL3":
        return Format.TFLITE
    if head.startswith(b"PK\x03\x04"):
        return _sniff_zip(path)
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return Format.TORCH_PICKLE  # legacy torch.save (a pickle)
    if _looks_like_onnx(path, head):
        return Format.ONNX
    raise UsageError(f"{path}: not a model file this tool reads (not ONNX, TorchScript, torch.export, "
                     "torch.save, Keras, SavedModel or TFLite)")


def _sniff_zip(path: Path) -> Format:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise UsageError(f"{path}: a damaged zip archive ({e})") from None
    tops = {n.split("/", 1)[1] if "/" in n else n for n in names}
    if {"config.json", "metadata.json"} <= set(names):
        return Format.KERAS
    if "archive_format" in tops and any(n.startswith("models/") for n in tops):
        return Format.TORCH_EXPORT
    if any(n.startswith("code/") for n in tops) and "constants.pkl" in tops:
        return Format.TORCHSCRIPT
    if "data.pkl" in tops:
        return Format.TORCH_PICKLE
    raise UsageError(f"{path}: a zip archive that is not a Keras, TorchScript, torch.export or torch.save file")


def _looks_like_onnx(path: Path, head: bytes) -> bool:
    """ModelProto starts with ir_version (field 1, varint: 0x08) and names its opsets."""
    if head[:1] != b"\x08":
        return False
    try:
        import onnx
    except ImportError:
        return True  # the ONNX loader will name the missing extra
    if path.stat().st_size >= PROTOBUF_LIMIT:
        raise UsageError(f"{path}: a single-file ONNX model over protobuf's 2 GB limit cannot be parsed; "
                         "save it with external data (onnx.save(..., save_as_external_data=True))")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends; only the message matters here
        raise UsageError(f"{path}: a damaged or truncated ONNX file ({type(e).__name__})") from None
    if not model.graph.node and not model.graph.output:
        raise UsageError(f"{path}: an ONNX file with an empty graph")
    check_external_data(path, model)
    return True


PROTOBUF_LIMIT = 2**31  # onnx.checker.MAXIMUM_PROTOBUF: no ModelProto parses or serializes past it
_EXTERNAL_KEYS = {"location", "offset", "length", "checksum"}
_ITEM_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 14: 8, 15: 16,
               16: 2, 17: 1, 18: 1, 19: 1, 20: 1}  # TensorProto.DataType -> bytes per element (fixed-size ones)


def check_external_data(path: Path, model) -> None:
    """Refuse external-data references that read outside the model's folder or past a file's end.

    onnxruntime 1.23 follows `../` and absolute locations, and neither loader refuses a symlink
    under the model's folder: so every location must be a plain relative path, every step of it a
    real folder or file (no symlink), and `offset + length` inside the file. Only `lstat` is used:
    nothing is read.
    """
    folder = path.resolve().parent
    for tensor in _all_tensors(model):
        if tensor.data_location == 1 or len(tensor.external_data):  # TensorProto.EXTERNAL
            reason = _external_data_problem(folder, tensor)
            if reason:
                raise UsageError(f"{path}: tensor {tensor.name or '(unnamed)'!r}: external data {reason}")


def _external_data_problem(folder: Path, tensor) -> str | None:
    entries = [(e.key, e.value) for e in tensor.external_data]
    info = dict(entries)
    if len(info) != len(entries) or not set(info) <= _EXTERNAL_KEYS:
        return f"has unknown or repeated keys ({', '.join(k for k, _ in entries)})"
    location = info.get("location", "")
    if not location or "\0" in location:
        return "has no usable location"
    if location.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", location):
        return f"location {location!r} is an absolute path; it must be relative to the model's folder"
    parts = [p for p in re.split(r"[/\\]", location) if p not in ("", ".")]
    if ".." in parts:
        return f"location {location!r} leaves the model's folder ('..')"
    if not parts:
        return f"location {location!r} names no file"
    target = folder
    for i, part in enumerate(parts):
        target, last = target / part, i == len(parts) - 1
        try:
            st = os.lstat(target)
        except OSError as e:
            return f"file {location!r} cannot be found beside the model ({e.strerror})"
        if stat.S_ISLNK(st.st_mode):
            step = "is a symlink" if last else f"goes through a symlink ({PurePosixPath(*parts[:i + 1])})"
            return f"location {location!r} {step}"
        if not (stat.S_ISREG(st.st_mode) if last else stat.S_ISDIR(st.st_mode)):
            return f"location {location!r} is not a regular file"
    return _range_problem(location, info, st.st_size, tensor)


def _range_problem(location: str, info: dict[str, str], size: int, tensor) -> str | None:
    try:
        offset = int(info.get("offset", "0"))
        length = int(info["length"]) if "length" in info else None
    except ValueError:
        return f"offset/length of {location!r} are not integers"
    if offset < 0 or (length is not None and length < 0):
        return f"offset/length of {location!r} are negative"
    if offset > size:
        return f"offset {offset} lies past the end of {location!r} ({size} bytes)"
    end = size if length is None else offset + length
    if end > size:
        return f"offset {offset} + length {length} runs past the end of {location!r} ({size} bytes)"
    itemsize = _ITEM_BYTES.get(tensor.data_type)
    if itemsize is not None:
        need = itemsize
        for d in tensor.dims:
            need *= d
        if end - offset != need:
            return f"holds {end - offset} bytes of {location!r} where its shape {list(tensor.dims)} needs {need}"
    return None


def _all_tensors(model):
    """Every TensorProto that can carry data: initializers, sparse ones, attribute tensors, in
    every graph (Loop/If/Scan bodies, functions, training graphs)."""
    graphs = [model.graph] + [g for t in model.training_info for g in (t.initialization, t.algorithm)]
    for graph in graphs:
        yield from _graph_tensors(graph)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node)


def _graph_tensors(graph):
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node):
    for attr in node.attribute:
        yield from [attr.t] if attr.HasField("t") else []
        yield from attr.tensors
        sparse = ([attr.sparse_tensor] if attr.HasField("sparse_tensor") else []) + list(attr.sparse_tensors)
        for s in sparse:
            yield from (s.values, s.indices)
        for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
            yield from _graph_tensors(g)
