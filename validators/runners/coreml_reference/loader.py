"""Read a saved Core ML package back into a MIL program, on any OS.

We read what ships: the package's model spec and its weights/weight.bin, through coremltools'
milproto loader (the inverse of its serializer, which runs on Linux). Validating the in-memory
program the converter built would miss anything lost or changed on the way to disk, and could
not validate files made by other tools.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from bridge.base.errors import RuntimeUnavailable, UnsafeInput
from bridge.base.lazy import require
from bridge.base.protos import walk


@dataclass(frozen=True)
class LoadedPackage:
    program: object  # coremltools.converters.mil.Program
    function: str  # the function Core ML runs by default
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    metadata: dict[str, str]  # the model's user-defined metadata
    images: dict[str, str]  # image input name -> its color layout (e.g. "RGB")


_BLOB = "CoreML.Specification.MILSpec.Value.BlobFileValue"
_PREFIX = "@model_path/weights/"


def check_weight_files(path: str, spec, weights_dir: str) -> None:
    """Every weight file the program names (anywhere in the spec, found by reflection) must be a
    regular file inside the package's weights folder: a hostile package could otherwise make us
    read any file on the machine as weights."""
    for msg, _ in walk(spec):
        if msg.DESCRIPTOR.full_name != _BLOB:
            continue
        name = msg.fileName
        rel = name[len(_PREFIX):] if name.startswith(_PREFIX) else None
        parts = re.split(r"[/\\]", rel or "")
        if rel is None or not rel or rel.startswith(("/", "\\")) or ".." in parts:
            raise UnsafeInput(f"{path}: the program names weight file {name!r}, outside the package's weights")
        target = Path(weights_dir) / rel
        if target.is_symlink() or not target.is_file():
            raise UnsafeInput(f"{path}: weight file {name!r} is missing, a symlink or not a regular file")


def load_package(path: str) -> LoadedPackage:
    """The ML Program in the .mlpackage at `path`, with its weights read from the package."""
    ct = require("coremltools")  # the runtime stage blocks the frameworks it probes for (Lane.runtime_blocks)
    from coremltools.converters.mil.frontend.milproto.load import load

    model = ct.models.MLModel(path, skip_model_load=True)
    spec = model.get_spec()
    check_weight_files(path, spec, model.weights_dir or "")
    kind = spec.WhichOneof("Type")
    if kind != "mlProgram":
        raise RuntimeUnavailable(f"{path} is a Core ML {kind} model; the reference executor runs ML Programs only")
    try:
        program = load(spec, spec.specificationVersion, model.weights_dir or "")
    except (ValueError, TypeError, KeyError, NotImplementedError, AssertionError) as e:
        raise RuntimeUnavailable(f"coremltools could not read the ML Program in {path} back: {e}") from e
    desc = spec.description
    function = desc.defaultFunctionName or "main"
    from coremltools.proto.FeatureTypes_pb2 import ImageFeatureType

    images = {i.name: ImageFeatureType.ColorSpace.Name(i.type.imageType.colorSpace)
              for i in desc.input if i.type.WhichOneof("Type") == "imageType"}
    loaded = LoadedPackage(program, function, tuple(i.name for i in desc.input), tuple(o.name for o in desc.output),
                           dict(desc.metadata.userDefined), images)
    declared = {v.name for v in program.functions[function].outputs}
    if set(loaded.output_names) != declared:
        raise RuntimeUnavailable(f"{path}: model outputs {list(loaded.output_names)} are not the program's "
                                 f"outputs {sorted(declared)}")
    return loaded
