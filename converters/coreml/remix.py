"""A Core ML `int8-mixed` search step cut from the first step's packages instead of converting again.

The search's first step (no layer kept) leaves two packages: the W8A8 one it ships and the same
program before weight compression (every weight float16, the activations quantized). A step keeping
layers K is the W8A8 package's program spec edited, never reconverted: each quantize/dequantize
pair reading an output of K's ops is dropped (its readers read that output unquantized: K keeps
its int8 weights and computes in float16, W8A16); in the search's wide step (`weights`) each
compressed weight an op of K reads also becomes the float16 constant the uncompressed program gives
the same op at the same input, its blob appended to the package's weight file. That is what a
conversion that never quantized K computes (tested on a real one, whose activation hook skips K and
whose weight compression skips K's weights, or not); `--coreml-keep K` makes its file by this same
edit (`--coreml-keep-weights`: the wide one).
The edit walks every block's operations by their bindings; it knows no op type but the activation
pair the lane inserts (`quantize` then `dequantize`) and that compressed weights are `constexpr_*`
ops.

The ops of a layer are found by name: `layers` (the first step's MIL builder: hub node -> the ops it
made) names them before coremltools' passes, which keep each name (an op's or its output's) or add
what `_before_passes` strips (its float16 pass appends `_cast_fp16`, as the localisation reads them
too). Passes also move data movement ops (reshape, transpose) between a quantize and its
dequantize: a dropped pair takes them along, moving the float tensor.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

from bridge.base.files import open_modes
from bridge.base.lane import LaneArtifact
from bridge.base.lazy import require
from bridge.converters.coreml.compress import uncompressed_warning
from bridge.converters.coreml.package import SPEC, deterministic_spec, stable_identifiers

WEIGHTS = "Data/com.apple.CoreML/weights"
HELD = "@"  # a unit's name for the artifact tensor localisation found the layer at (bridge.mixed.HELD)


W8A16 = "float16 activations, int8 weights"  # `kept_precision` of a narrow step
FLOAT16 = "float16"  # of a wide one: weights and activations


def remix(base: dict, units: tuple[tuple[str, ...], ...], node_names: dict[str, str], out: str,
          weights: bool = False) -> LaneArtifact:
    """The `int8-mixed` package keeping `units` (each a fused group's hub node names, the layer's own
    first, and "@" + the program tensor localisation found it at) with float16 activations, written
    to `out`; with `weights` (the search's wide step, `--coreml-keep-weights`) with their float16
    weights too, else with their int8 ones (W8A16, Core ML's weight-only path: the bytes of the int8
    file). Returns the artifact's path and what differs from the first step's details."""
    from bridge.converters.onnx.graph import named_layers

    layers: dict[str, list[str]] = json.loads(Path(base["layers"]).read_text())
    flat = ",".join(dict.fromkeys(n for unit in units for n in unit if not n.startswith(HELD)))
    nodes = SimpleNamespace(graph=SimpleNamespace(node=[SimpleNamespace(name=n) for n in layers]))
    kept = named_layers(flat, nodes, node_names, "--coreml-keep", "coreml-convert")
    ops = {name for node in kept for name in layers[node]}
    held = {n[len(HELD):] for unit in units for n in unit if n.startswith(HELD)}
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(base["int8"], out)
    restored = keep_float16(Path(out), Path(base["float"]), ops, held, weights)
    deterministic_spec(Path(out))
    stable_identifiers(Path(out))
    open_modes(Path(out))
    art = LaneArtifact(mode=base["mode"], path=out)
    art.details.update({"kept_layers": list(kept.values()), "kept_precision": FLOAT16 if weights else W8A16,
                        "kept_weights": sorted(restored), "compressed_weights": compressed(out)})
    art.warnings.extend(uncompressed_warning(art.mode, art.details["compressed_weights"]["elements"], bool(restored)))
    return art


def keep_float16(package: Path, float_package: Path, ops: set[str], held: set[str], weights: bool) -> list[str]:
    """Edit `package` (a copy of the W8A8 one) in place: `ops` (MIL op names before coremltools'
    passes) write unquantized outputs, from float16 weights with `weights`; so do the ops writing a
    tensor in `held`. Returns the names of the weights restored to float16."""
    model_pb2 = require("coremltools.proto.Model_pb2")
    spec, floats = model_pb2.Model(), model_pb2.Model()
    spec.ParseFromString((package / "Data" / SPEC).read_bytes())
    floats.ParseFromString((float_package / "Data" / SPEC).read_bytes())
    program = Program(spec.mlProgram)
    mine = {name for name, op in program.producer.items() if _own(op, ops) or name in held}
    program.drop_activation_pairs(mine)
    restored = program.restore_weights(mine, Program(floats.mlProgram)) if weights else []
    program.apply()
    rewrite_weights(spec.mlProgram, package, float_package)
    (package / "Data" / SPEC).write_bytes(spec.SerializeToString())
    return restored


def _own(op, ops: set[str]) -> bool:
    """Whether `op` (after coremltools' passes) is one of `ops` (before them), by its name or an output's."""
    return any(_before_passes(n) in ops for n in (op_name(op), *(o.name for o in op.outputs)))


def _before_passes(name: str) -> str:
    """A name as our builder gave it, undoing what coremltools (9.0) adds to the names of the ops its
    passes rebuild: `_cast_<type>` (an op recast: float16 compute, uint16 gather indices), `_to_fp16`
    (a tensor cast), `_has_output_shape` (a conv_transpose given its output shape), `_lowered`, the
    prefix `_inversed_` (a division by a constant made a multiplication), and the `op_` / `var_`
    its name sanitizer puts before a name that starts with a digit (ONNX tensors named `880`)."""
    name = re.sub(r"(_cast_[a-z]+[0-9]*|_to_fp16|_has_output_shape|_lowered)+$", "", name.removeprefix("_inversed_"))
    return re.sub(r"^(op|var)_(?=[0-9])", "", name)


def op_name(op) -> str:
    value = op.attributes.get("name")
    strings = value.immediateValue.tensor.strings.values if value is not None else ()
    return strings[0] if strings else (op.outputs[0].name if op.outputs else "")


class Program:
    """An ML Program spec's operations over all its blocks (nested ones included), who writes and who
    reads each tensor, and the edits decided on them, applied at once by `apply`."""

    def __init__(self, program):
        stack, self.blocks, self.ops = [b for f in program.functions.values()
                                        for b in f.block_specializations.values()], [], []
        self.outputs = {name for b in stack for name in b.outputs}  # the functions' outputs keep their names
        while stack:
            block = stack.pop()
            self.blocks.append(block)
            for op in block.operations:
                self.ops.append(op)
                stack.extend(op.blocks)
        self.producer = {o.name: op for op in self.ops for o in op.outputs}
        self.readers: dict[str, list] = defaultdict(list)  # tensor -> (op, binding) reading it
        for op in self.ops:
            for argument in op.inputs.values():
                for binding in argument.arguments:
                    if binding.WhichOneof("binding") == "name":
                        self.readers[binding.name].append((op, binding))
        self.gone: set[int] = set()  # ids of the ops dropped
        self.replaced: dict[int, object] = {}  # id of an op -> the op taking its place

    def drop_activation_pairs(self, tensors: set[str]) -> None:
        """Every quantize reading one of `tensors` goes with its dequantize ops: their readers read
        the tensor itself (or a rescaled copy, `_ratio`; a function output keeps its name: its
        dequantize becomes an identity). coremltools' passes may have moved data movement ops
        (reshape, transpose) between the pair: those then move the float tensor instead."""
        for q in self.ops:
            source = _argument(q, "input")
            found = self._pair(q) if q.type == "quantize" and source in tensors else None
            if found is None:
                continue
            between, dqs = found
            ratios = [self._ratio(q, dq) for dq in dqs]
            if any(r is None for r in ratios):
                continue
            self._rename(q.outputs[0].name, source)
            dtype = next(o.type.tensorType.dataType for o in self.producer[source].outputs if o.name == source)
            for op in between:
                op.outputs[0].type.tensorType.dataType = dtype
            for dq, ratio in zip(dqs, ratios, strict=True):
                read = _argument(dq, "input")
                if ratio != 1.0:
                    self.replaced[id(dq)] = _rescale(dq, read, self.producer[_argument(dq, "scale")], ratio)
                elif dq.outputs[0].name in self.outputs:
                    self.replaced[id(dq)] = _identity(dq, read)
                else:
                    self._rename(dq.outputs[0].name, read)
                    self.gone.add(id(dq))
            self.gone.add(id(q))

    def _pair(self, q) -> tuple[list, list] | None:
        """The ops between `q` and its dequantize ops (each reading one int8 tensor of the pair's and
        otherwise constants only, writing one int8 tensor), and those dequantize ops; None when
        something else reads the quantized values."""
        int8 = q.outputs[0].type.tensorType.dataType
        between, dqs, todo = [], [], [q.outputs[0].name]
        while todo:
            tensor = todo.pop()
            for op, _ in self.readers.get(tensor, ()):
                if op.type == "dequantize":
                    dqs.append(op)
                elif len(op.outputs) == 1 and op.outputs[0].type.tensorType.dataType == int8 \
                        and op.outputs[0].name not in self.outputs and self._reads_only(op, tensor):
                    between.append(op)
                    todo.append(op.outputs[0].name)
                else:
                    return None
        return (between, dqs) if dqs else None

    def _reads_only(self, op, tensor: str) -> bool:
        """Whether `op` reads `tensor` once and constants otherwise."""
        names = [b.name for a in op.inputs.values() for b in a.arguments if b.WhichOneof("binding") == "name"]
        others = [n for n in names if n != tensor]
        return len(names) - len(others) == 1 and all(
            self.producer.get(n) is not None and self.producer[n].type == "const" for n in others)

    def _ratio(self, q, dq) -> float | None:
        """What the pair multiplies by, rounding aside: the dequantize's scale over the quantize's. They
        differ where coremltools normalized the scales of a quantized add's inputs
        (`distributive_quantized_binary_op_scale_normalization`: the add then computes in units of one
        input's scale). None: a pair this cannot undo exactly (zero points, or scales not scalars)."""
        if _argument(q, "zero_point") or _argument(dq, "zero_point"):
            return None
        scales = [_scalar(self.producer.get(_argument(op, "scale") or "")) for op in (q, dq)]
        if any(s is None for s in scales):
            return None
        return 1.0 if scales[0] == scales[1] else scales[1] / scales[0]

    def restore_weights(self, tensors: set[str], floats: Program) -> list[str]:
        """Each compressed weight (a `constexpr_*` op) read by the op writing one of `tensors` gives way
        to the constant the float program's op of the same name reads at the same input (its blobs
        marked as the float package's, `FLOAT_BLOBS`); returns the constants' names."""
        restored = []
        for name in sorted(tensors):
            op, twin = self.producer[name], floats.producer.get(name)
            for key, argument in op.inputs.items() if twin is not None else ():
                weight = self.producer.get(argument.arguments[0].name) if len(argument.arguments) == 1 else None
                source = floats.producer.get(_argument(twin, key) or "")
                if weight is None or not weight.type.startswith("constexpr_") or source is None \
                        or source.type != "const" or id(weight) in self.replaced:
                    continue
                const = type(source)()
                const.CopyFrom(source)
                for value in const.attributes.values():
                    if value.WhichOneof("value") == "blobFileValue":
                        value.blobFileValue.fileName = FLOAT_BLOBS + value.blobFileValue.fileName.rsplit("/", 1)[-1]
                self._rename(weight.outputs[0].name, const.outputs[0].name)
                self.replaced[id(weight)] = const
                restored.append(const.outputs[0].name)
        return restored

    def _rename(self, old: str, new: str) -> None:
        for op, binding in self.readers.pop(old, ()):
            binding.name = new
            self.readers[new].append((op, binding))

    def apply(self) -> None:
        """Write the edits into the spec: dropped ops (and the constants only they read) leave their
        blocks, replaced ones are swapped in place; nested blocks first, so their parents copy them
        edited."""
        for op in self.ops:
            if op.type == "const" and id(op) not in self.replaced and op.outputs[0].name not in self.outputs:
                readers = self.readers.get(op.outputs[0].name, [])
                if readers and all(id(r) in self.gone or id(r) in self.replaced for r, _ in readers):
                    self.gone.add(id(op))
        for block in reversed(self.blocks):
            ops = [new for op in block.operations if id(op) not in self.gone
                   for new in _as_list(self.replaced.get(id(op), op))]
            copies = [type(op).FromString(op.SerializeToString()) for op in ops]
            del block.operations[:]
            block.operations.extend(copies)


def _as_list(op) -> list:
    return op if isinstance(op, list) else [op]


def _argument(op, key: str) -> str | None:
    """The tensor an op reads at input `key`, when that is one tensor."""
    argument = op.inputs.get(key) if key in op.inputs else None
    if argument is None or len(argument.arguments) != 1:
        return None
    binding = argument.arguments[0]
    return binding.name if binding.WhichOneof("binding") == "name" else None


def _scalar(const) -> float | None:
    """The value of a scalar float constant held in the spec itself, else None."""
    import numpy as np

    if const is None or const.type != "const" or "val" not in const.attributes:
        return None
    value = const.attributes["val"]
    tensor = value.immediateValue.tensor if value.WhichOneof("value") == "immediateValue" else None
    if tensor is None or value.type.tensorType.rank != 0:
        return None
    if tensor.WhichOneof("value") == "bytes":
        return float(np.frombuffer(tensor.bytes.values, np.float16)[0])
    if tensor.WhichOneof("value") == "floats":
        return float(tensor.floats.values[0])
    return None


def _rescale(dq, source: str, scale_const, ratio: float):
    """The dequantize `dq` as `mul(source, ratio)`: the pair's scaling without its rounding, in the
    scale constant's own type (a new constant, next to it)."""
    import numpy as np

    const = type(scale_const)()
    const.CopyFrom(scale_const)
    name = f"{dq.outputs[0].name}_rescale"
    const.outputs[0].name = name
    const.attributes["name"].immediateValue.tensor.strings.values[0] = name
    tensor = const.attributes["val"].immediateValue.tensor
    if tensor.WhichOneof("value") == "bytes":
        tensor.bytes.values = np.float16(ratio).tobytes()
    else:
        tensor.floats.values[0] = ratio
    mul = _identity(dq, source)
    mul.type = "mul"
    mul.inputs["y"].arguments.add().name = name
    return [const, mul]


def _identity(op, source: str):
    """`op` (same outputs, same name) as an identity of `source`."""
    new = type(op)()
    new.type = "identity"
    new.inputs["x"].arguments.add().name = source
    new.outputs.extend(op.outputs)
    new.attributes["name"].CopyFrom(op.attributes["name"])
    return new


FLOAT_BLOBS = "@float/"  # a restored constant's blobs point into the float package until the weights are rewritten
KINDS = {"FLOAT16": "fp16", "FLOAT32": "float", "INT8": "int8", "UINT8": "uint8", "INT16": "int16",
         "UINT16": "uint16", "INT32": "int32", "UINT32": "uint32", "INT4": "int4", "UINT4": "uint4"}


def blob_values(program):
    """Every blob-valued attribute of every op, in the program's order (nested blocks after their op)."""
    stack = [op for f in program.functions.values() for b in f.block_specializations.values()
             for op in reversed(b.operations)]
    while stack:
        op = stack.pop()
        for key in sorted(op.attributes):
            if op.attributes[key].WhichOneof("value") == "blobFileValue":
                yield op.attributes[key]
        stack.extend(o for b in reversed(op.blocks) for o in reversed(b.operations))


def rewrite_weights(program, package: Path, float_package: Path) -> None:
    """The package's weight files written again with exactly the blobs the program names (read from
    the package's old files, or the float package's for restored constants), as a save would."""
    storage = require("coremltools.libmilstoragepython")
    names = require("coremltools.proto.MIL_pb2").DataType.Name
    folder = package / WEIGHTS
    readers: dict[str, object] = {}
    writers: dict[str, object] = {}
    written: dict[tuple[str, int], int] = {}  # (file read, offset there) -> offset written
    old = {p.name: p.rename(p.with_name(p.name + ".old")) for p in folder.iterdir()}
    reader = writer = None  # a program without blobs leaves them unset
    for value in blob_values(program):
        blob = value.blobFileValue
        source = float_package / WEIGHTS if blob.fileName.startswith(FLOAT_BLOBS) else None
        file = blob.fileName.rsplit("/", 1)[-1]
        path = source / file if source else old[file]
        if str(path) not in readers:
            readers[str(path)] = storage._BlobStorageReader(str(path))
        if file not in writers:
            writers[file] = storage._BlobStorageWriter(str(folder / file))
        reader, writer = readers[str(path)], writers[file]
        key = (str(path), blob.offset)
        if key not in written:  # a blob several values point at (the file shares it) is written once
            kind = KINDS[names(value.type.tensorType.dataType)]
            written[key] = getattr(writer, f"write_{kind}_data")(getattr(reader, f"read_{kind}_data")(blob.offset))
        blob.offset = written[key]
        blob.fileName = f"@model_path/weights/{file}"
    del reader, writer
    readers.clear()
    writers.clear()  # a writer completes its file when it goes
    for path in old.values():
        path.unlink()


def compressed(package: str) -> dict:
    """The package's `compressed_weights` detail, as the lane records it for a converted one."""
    from coremltools.converters.mil.frontend.milproto.load import load

    from bridge.converters.coreml import compress as cm

    ct = require("coremltools")
    model = ct.models.MLModel(package, skip_model_load=True)
    program = load(model.get_spec(), specification_version=model.get_spec().specificationVersion,
                   file_weights_dir=model.weights_dir)
    elements, per_param = cm.compressed_bytes_per_param(program)
    return {"elements": elements, "bytes_per_param": per_param, "weight_threshold": cm.WEIGHT_THRESHOLD}
