"""What a SOURCE or ARTIFACT argument is, from its content rather than its name.

Sniffing reads magic bytes and zip directories only: nothing here imports a framework or runs
code from the file. Zip archives are bounded (entries, uncompressed size) before any member is
read. ONNX files are also parsed (protobuf only, no tensor data) and checked
(`bridge.base.onnx_files.check_model`: every tensor's external data, subgraph nesting) before onnx or
onnxruntime reads any of their data: every command sniffs its arguments first, so `convert`,
`validate` and `inspect` all get the checks.
"""

from __future__ import annotations

import json
import os
import re
import stat
import zipfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from bridge.base.errors import UnsafeInput, UsageError


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


# What an export imports before anything of the user's runs, by what its SOURCE argument names:
# a stage child loads them while the CLI starts (`bridge.console`). Only the argument's suffix is
# looked at, and an entry point's file is read as text, never run; a wrong guess costs memory only.
TORCH_EXPORT = ("torch", "onnx", "onnxslim")
ONNX_EXPORT = ("onnx", "onnxruntime", "onnxslim")
_TORCH_SUFFIXES = (".pt", ".pth", ".pt2", ".ts", ".torchscript")
_IMPORTS = re.compile(rb"^[ \t]*(?:import|from)[ \t]+(torch|keras|tensorflow|tf_keras)\b", re.MULTILINE)


def export_modules(text: str) -> tuple[str, ...]:
    """The modules the export of SOURCE `text` will import first: an ONNX file's, a torch file's,
    or a `file.py:callable` whose file imports torch and no Keras or TensorFlow; else none."""
    m = _ENTRYPOINT.match(text)
    if m and m.group("target").endswith(".py") and not Path(text).exists():
        if not os.path.isfile(m.group("target")):  # a FIFO or a device would block or never end
            return ()
        try:
            with open(m.group("target"), "rb") as f:
                found = {g.decode() for g in _IMPORTS.findall(f.read(1 << 20))}
        except OSError:
            return ()
        return TORCH_EXPORT if found == {"torch"} else ()
    suffix = Path(text).suffix.lower()
    if suffix == ".onnx":
        return ONNX_EXPORT
    return TORCH_EXPORT if suffix in _TORCH_SUFFIXES else ()


def sniff(text: str, *, parse: bool = True) -> SourceRef:
    """Classify a SOURCE/ARTIFACT argument; unusable input is a `UsageError` with one-line reason.
    An ONNX file is parsed and checked (every tensor, every subgraph) unless `parse` is false: a
    conversion checks it again in its export stage before anything reads it, and parsing it here
    as well put onnx's import and the whole file's parse (0.2 s and 200 MB on ResNet50) on the
    critical path of every run, and a warm `bridge batch`'s."""
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
    return SourceRef(text, _sniff_file(path, parse), path=path.resolve())


def _sniff_dir(path: Path) -> Format:
    if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
        return Format.SAVED_MODEL
    if (path / "Manifest.json").is_file() and (path / "Data").is_dir():
        check_package(path)
        return Format.MLPACKAGE
    raise UsageError(f"{path}: a folder that is neither a TensorFlow SavedModel nor a Core ML .mlpackage")


def check_package(path: Path) -> None:
    """A .mlpackage is read file by file: each must be a regular file inside it (a symlink could
    point anywhere, a FIFO would hang the reader), and the manifest may name only paths inside it."""
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            entry = Path(root) / name
            mode = os.lstat(entry).st_mode
            if stat.S_ISLNK(mode) or not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                raise UnsafeInput(f"{path}: {entry.relative_to(path)} is a symlink or special file; a package "
                                 "holds regular files only")
    try:
        manifest = json.loads((path / "Manifest.json").read_text())
        items = [str(item["path"]) for item in manifest.get("itemInfoEntries", {}).values()]
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise UnsafeInput(f"{path}: an unreadable Manifest.json ({e})") from None
    for item in items:
        parts = re.split(r"[/\\]", item)
        if item.startswith(("/", "\\")) or ".." in parts:
            raise UnsafeInput(f"{path}: Manifest.json names {item!r}, outside the package")


def _sniff_file(path: Path, parse: bool = True) -> Format:
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
    if _looks_like_onnx(path, head, parse):
        return Format.ONNX
    raise UsageError(f"{path}: not a model file this tool reads (not ONNX, TorchScript, torch.export, "
                     "torch.save, Keras, SavedModel or TFLite)")


def _sniff_zip(path: Path) -> Format:
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, OSError) as e:
        raise UsageError(f"{path}: a damaged zip archive ({e})") from None
    check_archive(path, infos)
    names = [i.filename for i in infos]
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


def _looks_like_onnx(path: Path, head: bytes, parse: bool = True) -> bool:
    """ModelProto starts with ir_version (field 1, varint: 0x08) and names its opsets."""
    if head[:1] != b"\x08":
        return False
    if not parse:
        return True
    try:
        import onnx  # noqa: F401
    except ImportError:
        return True  # the ONNX loader will name the missing extra
    from bridge.base.onnx_files import read_graph

    read_graph(path)  # parses the graph (no tensor bytes) and checks every tensor and subgraph
    return True


# A zip member is read only once the whole archive is known to fit: real model archives compress
# their weights by 1-2x; a bomb by 1000x.
MAX_ENTRIES = 100_000
MAX_UNCOMPRESSED = 64 << 30
MAX_RATIO = 100
RATIO_FROM = 64 << 20  # small archives may compress as they like


def check_archive(path: Path, infos: list[zipfile.ZipInfo]) -> None:
    """Refuse a zip whose entry count or declared uncompressed size could exhaust memory or disk
    before any member is read (zipfile itself never reads past a member's declared size)."""
    if len(infos) > MAX_ENTRIES:
        raise UnsafeInput(f"{path}: a zip archive with {len(infos):,} entries (more than {MAX_ENTRIES:,} is refused)")
    total = sum(i.file_size for i in infos)
    packed = max(1, path.stat().st_size)
    if total > MAX_UNCOMPRESSED or (total > RATIO_FROM and total > MAX_RATIO * packed):
        raise UnsafeInput(f"{path}: a zip archive that expands from {packed:,} to {total:,} bytes "
                         f"(over {MAX_RATIO}x or {MAX_UNCOMPRESSED >> 30} GiB is refused as a zip bomb)")
