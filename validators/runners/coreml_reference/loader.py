"""Read a saved Core ML package back into a MIL program, on any OS.

We read what ships: the package's model spec and its weights/weight.bin, through coremltools'
milproto loader (the inverse of its serializer, which runs on Linux). Validating the in-memory
program the converter built would miss anything lost or changed on the way to disk, and could
not validate files made by other tools.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.errors import RuntimeUnavailable
from bridge.isolation import in_stage
from bridge.lazy import require

# Reading and running a package needs none of the frameworks coremltools probes for at import.
UNUSED_FRAMEWORKS = ("tensorflow", "torch", "sklearn")


@dataclass(frozen=True)
class LoadedPackage:
    program: object  # coremltools.converters.mil.Program
    function: str  # the function Core ML runs by default
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    metadata: dict[str, str]  # the model's user-defined metadata
    images: dict[str, str]  # image input name -> its color layout (e.g. "RGB")


def load_package(path: str) -> LoadedPackage:
    """The ML Program in the .mlpackage at `path`, with its weights read from the package."""
    ct = require("coremltools", without=UNUSED_FRAMEWORKS if in_stage() else ())
    from coremltools.converters.mil.frontend.milproto.load import load

    model = ct.models.MLModel(path, skip_model_load=True)
    spec = model.get_spec()
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
