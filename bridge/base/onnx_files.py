"""Reading ONNX files that may be hostile: every tensor checked, external data read by us alone.

An ONNX tensor can keep its bytes in another file (`external_data`), and onnx, onnxruntime and
onnxslim all follow such a reference wherever it points, from wherever the tensor sits (an
initializer, a Constant in an If branch, a function's default attribute). So:

- `check_model` walks *every* `TensorProto` in the model by protobuf reflection (no hand-kept list
  of places) and refuses any external reference that leaves the model's folder, goes through a
  symlink, is not a regular file or reads past its end. It also bounds the structure: subgraphs
  nested deeper than `MAX_NESTING`, model-local functions that call themselves, duplicate output
  names.
- `load_model` then reads the external bytes itself, each file opened step by step with
  `O_NOFOLLOW` beneath the model's folder, and hands back a model with no external reference
  left: no later tool (onnxruntime, onnxslim, our lanes) can resolve a location we did not check.

Nothing here imports a framework at module level.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from bridge.base import protos
from bridge.base.errors import UnsafeInput
from bridge.base.inference import size_bound
from bridge.base.lazy import require

PROTOBUF_LIMIT = 2**31  # onnx.checker.MAXIMUM_PROTOBUF: no ModelProto parses or serializes past it
MAX_NESTING = 8  # subgraph levels below the main graph (real exporters nest 1-3)
MAX_CALL_DEPTH = 16  # model-local functions calling functions
MAX_IR_VERSION = 11  # the newest onnxruntime 1.23 reads
_EXTERNAL_KEYS = {"location", "offset", "length", "checksum"}
_ITEM_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 14: 8, 15: 16,
               16: 2, 17: 1, 18: 1, 19: 1, 20: 1}  # TensorProto.DataType -> bytes per element (fixed-size ones)
_TENSOR = "onnx.TensorProto"
_GRAPH = "onnx.GraphProto"


def walk(message) -> Iterator[tuple[object, int]]:
    """Every message in an ONNX message, with how many subgraphs enclose it; tensors are not entered."""
    return protos.walk(message, nest=_GRAPH, leaves=frozenset({_TENSOR}))


def tensors(model) -> Iterator[object]:
    """Every TensorProto anywhere in the model."""
    for msg, _ in walk(model):
        if msg.DESCRIPTOR.full_name == _TENSOR:
            yield msg


def is_external(tensor) -> bool:
    return tensor.data_location == 1 or len(tensor.external_data) > 0  # TensorProto.EXTERNAL


def check_model(path: Path, model) -> None:
    """Everything that makes a model unsafe or unbounded to load, refused with one line naming it."""
    folder = path.resolve().parent
    for tensor in tensors(model):
        if is_external(tensor):
            reason = _external_data_problem(folder, tensor)
            if reason:
                raise UnsafeInput(f"{path}: tensor {tensor.name or '(unnamed)'!r}: external data {reason}")
    depth = _nesting(path, model)
    if depth > MAX_NESTING:
        raise UnsafeInput(f"{path}: subgraphs (If/Loop/Scan bodies, through any function calls) nest {depth} "
                         f"levels deep; more than {MAX_NESTING} is refused (real exporters nest 1-3, and each "
                         "level can double the runtime's set-up time)")
    names = [o.name for o in model.graph.output]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UnsafeInput(f"{path}: graph output(s) {', '.join(twice)} listed more than once")


def _nesting(path: Path, model) -> int:
    """How many subgraph levels the main graph reaches, counting those inside every model-local
    function it calls (a runtime inlines them). Functions that call themselves are refused."""
    local = {(f.domain, f.name): f for f in model.functions}
    memo: dict[tuple[str, str], int] = {}

    def deepest(container, calls: tuple) -> int:
        if len(calls) > MAX_CALL_DEPTH:
            raise UnsafeInput(f"{path}: model-local functions call each other more than {MAX_CALL_DEPTH} deep")
        best = 0
        for msg, depth in walk(container):
            if msg.DESCRIPTOR.full_name != "onnx.NodeProto":
                continue
            key = (msg.domain, msg.op_type)
            if key in calls:
                chain = " -> ".join(name for _, name in (*calls[calls.index(key):], key))
                raise UnsafeInput(f"{path}: model-local functions call themselves ({chain})")
            if key in local and key not in memo:
                memo[key] = deepest(local[key], (*calls, key))
            best = max(best, depth + memo.get(key, 0))
        return best

    return deepest(model.graph, ())


def _external_data_problem(folder: Path, tensor) -> str | None:
    entries = [(e.key, e.value) for e in tensor.external_data]
    info = dict(entries)
    if len(info) != len(entries) or not set(info) <= _EXTERNAL_KEYS:
        return f"has unknown or repeated keys ({', '.join(k for k, _ in entries)})"
    parts, problem = _location_parts(info.get("location", ""))
    if problem:
        return problem
    location = info["location"]
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


def _location_parts(location: str) -> tuple[list[str], str | None]:
    if not location or "\0" in location:
        return [], "has no usable location"
    if location.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", location):
        return [], f"location {location!r} is an absolute path; it must be relative to the model's folder"
    parts = [p for p in re.split(r"[/\\]", location) if p not in ("", ".")]
    if ".." in parts:
        return [], f"location {location!r} leaves the model's folder ('..')"
    if not parts:
        return [], f"location {location!r} names no file"
    return parts, None


def _range(info: dict[str, str]) -> tuple[int, int | None]:
    return int(info.get("offset", "0")), (int(info["length"]) if "length" in info else None)


def _range_problem(location: str, info: dict[str, str], size: int, tensor) -> str | None:
    try:
        offset, length = _range(info)
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


def read_graph(path: Path):
    """The model without its external bytes, checked. Reads nothing but `path`."""
    onnx = require("onnx")
    if path.stat().st_size >= PROTOBUF_LIMIT:
        raise UnsafeInput(f"{path}: a single-file ONNX model over protobuf's 2 GB limit cannot be parsed; "
                         "save it with external data (onnx.save(..., save_as_external_data=True))")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends; only the message matters here
        raise UnsafeInput(f"{path}: a damaged or truncated ONNX file ({type(e).__name__})") from None
    if not model.graph.node and not model.graph.output:
        raise UnsafeInput(f"{path}: an ONNX file with an empty graph")
    check_model(path, model)
    return model


def load_model(path: Path):
    """The checked model with every external tensor's bytes read by us into the model itself."""
    model = read_graph(path)
    folder = path.resolve().parent
    for tensor in tensors(model):
        if is_external(tensor):
            _inline(folder, tensor, path)
    return fit_ir_version(model)


def _inline(folder: Path, tensor, path: Path) -> None:
    info = {e.key: e.value for e in tensor.external_data}
    reason = _external_data_problem(folder, tensor)  # again, right before the read
    if reason:
        raise UnsafeInput(f"{path}: tensor {tensor.name or '(unnamed)'!r}: external data {reason}")
    parts, _ = _location_parts(info["location"])
    offset, length = _range(info)
    fd = _open_beneath(folder, parts)
    try:
        size = os.fstat(fd).st_size
        count = size - offset if length is None else length
        data = os.pread(fd, count, offset)
    finally:
        os.close(fd)
    if len(data) != count:
        raise UnsafeInput(f"{path}: tensor {tensor.name!r}: external file {info['location']!r} changed while read")
    tensor.raw_data = data
    del tensor.external_data[:]
    tensor.data_location = 0  # DEFAULT


def _open_beneath(folder: Path, parts: list[str]) -> int:
    """Open `folder/parts...` one step at a time, never following a symlink, and only a regular
    file at the end: a path swapped for a symlink after the check still cannot leave `folder`."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            flags = os.O_RDONLY | os.O_NOFOLLOW | (os.O_NONBLOCK if last else os.O_DIRECTORY)
            nxt = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = nxt
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafeInput(f"external data {'/'.join(parts)!r} is not a regular file")
        return fd
    except OSError as e:
        os.close(fd)
        raise UnsafeInput(f"external data {'/'.join(parts)!r} cannot be opened safely ({e.strerror})") from None
    except UnsafeInput:
        os.close(fd)
        raise


def fit_ir_version(model):
    """onnx 1.19's helpers stamp IR 12 on every model; onnxruntime 1.23 reads up to 11, and nothing
    IR 12 adds is used by a graph of the opsets it runs."""
    if model.ir_version > MAX_IR_VERSION:
        model.ir_version = MAX_IR_VERSION
    return model


def session_source(path: Path, workdir: Path | None = None, *, edit=None) -> str | bytes:
    """What to hand onnxruntime for `path`: the path itself when the file is all there is (no
    external data, an IR onnxruntime reads), else the checked model with its bytes inlined, as
    bytes, or, past protobuf's limit, re-saved by us into a private folder. `edit(model)` changes
    the graph first (per-layer localisation exposes inner tensors as outputs); it sees the graph
    before any external bytes are read, so it never copies a weight."""
    model = read_graph(path)
    external = any(is_external(t) for t in tensors(model))
    if edit is None and model.ir_version <= MAX_IR_VERSION and not external:
        return str(path)
    if edit is not None:
        edit(model)
    if external:
        folder = path.resolve().parent
        for tensor in tensors(model):
            if is_external(tensor):
                _inline(folder, tensor, path)
    model = fit_ir_version(model)
    if size_bound(model) < PROTOBUF_LIMIT - (64 << 20):
        return model.SerializeToString()
    onnx = require("onnx")
    folder = Path(tempfile.mkdtemp(prefix="bridge-onnx-", dir=workdir))
    copy = folder / "model.onnx"
    onnx.save(model, str(copy), save_as_external_data=True, all_tensors_to_one_file=True, location="model.data")
    return str(copy)
