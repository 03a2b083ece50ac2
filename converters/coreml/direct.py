"""`--coreml-route direct`: coremltools' own PyTorch and TensorFlow frontends, for comparison.

The ONNX route (our converter from the hub) stays the default for every source: coremltools'
torch frontend is tested up to torch 2.7 and traces with `torch.jit.trace` (it fails on
`nn.TransformerEncoder`), its TensorFlow frontend up to TF 2.12, and neither reads ONNX. This route
reloads the source in the lane's child (the hub cannot feed it), converts it with the same modes,
deployment targets and compression as the ONNX route, and the report records which route made
each file. int8 activation quantization needs our calibrated ONNX route and is refused here
(coremltools' own activation calibration runs only on macOS).
"""

from __future__ import annotations

import numpy as np

from bridge.base.bindings import IO, Binding
from bridge.base.errors import ConversionError, one_line
from bridge.base.lane import ExportRequest, LaneArtifact, LaneRequest
from bridge.base.lazy import require
from bridge.base.sources import Format, SourceRef
from bridge.converters.coreml import compress as cm
from bridge.converters.coreml.build import dynamic_upper_bound
from bridge.converters.coreml.lane import convert_modes, precision


def convert(req: LaneRequest) -> list[LaneArtifact]:
    """Entry point of the `coreml-convert` stage on the direct route."""
    ct = require("coremltools")
    ref: SourceRef = req.source
    model, example = _load(ref, req)
    if req.framework == "torch":
        source, frontend = _torch_source(model, req), "pytorch"
    else:
        source, frontend = _keras_source(model, example, req), "tensorflow"
    inputs = [ct.TensorType(name=s.name, shape=_shape(ct, s), dtype=np.dtype(s.dtype).type) for s in req.inputs]
    outputs = [ct.TensorType(name=o.name) for o in req.outputs] if frontend == "pytorch" else None

    def make(mode: str, target: str):
        if cm.CONFIG[mode].activations:
            raise ConversionError(f"{mode}: int8 activations need the ONNX route (--coreml-route onnx)",
                                  stage="coreml-convert")
        mlmodel = ct.convert(source, source=frontend, inputs=inputs, outputs=outputs, convert_to="mlprogram",
                             compute_precision=precision(mode), minimum_deployment_target=getattr(ct.target, target),
                             skip_model_load=True)
        return mlmodel, _io(req, mlmodel), frozenset()  # no mixed mode on this route (`check`)

    return convert_modes(req, (req.framework, f"coremltools({frontend})"), make)


def _load(ref: SourceRef, req: LaneRequest):
    """The source model, loaded under the same policy as the export stage (`--trust-code`)."""
    if ref.format is Format.PYTHON:
        from bridge.converters.onnx.entrypoint import load_entrypoint

        return load_entrypoint(ref)
    ereq = ExportRequest(ref, req.hub_path, trust_code=req.trust_code)
    if ref.format in (Format.KERAS, Format.H5):
        from bridge.converters.onnx.keras_source import load_keras

        return load_keras(ereq), None
    from bridge.converters.onnx.torch_source import load_file

    return load_file(ereq)


def _torch_source(model, req: LaneRequest):
    torch = require("torch")
    if isinstance(model, torch.export.ExportedProgram):
        return model.run_decompositions({})
    if isinstance(model, torch.jit.ScriptModule):
        return model
    args = tuple(torch.from_numpy(np.zeros(s.shape, dtype=s.dtype)) for s in req.inputs)
    try:
        with torch.no_grad():
            return torch.jit.trace(model.eval(), args)
    except Exception as e:  # noqa: BLE001 - tracing raises whatever the model's code raises
        raise ConversionError(f"torch.jit.trace failed: {one_line(str(e))[:300]}",
                              stage="coreml-convert") from None


def _keras_source(model, example, req: LaneRequest):
    """A concrete function, the form coremltools' TensorFlow frontend takes from Keras 3 models."""
    tf = require("tensorflow")
    from bridge.converters.onnx.keras_source import call_model, flatten, input_layout

    names = [s.name for s in req.inputs]
    layout = input_layout(example, model, len(names))
    signature = [tf.TensorSpec([None if i in s.dynamic else d for i, d in enumerate(s.shape)], s.dtype, name=s.name)
                 for s in req.inputs]
    fn = tf.function(lambda *xs: flatten(call_model(model, layout, names, xs)), input_signature=signature)
    return [fn.get_concrete_function()]


def _shape(ct, s):
    return ct.Shape([ct.RangeDim(1, dynamic_upper_bound(d), d) if i in s.dynamic else d
                     for i, d in enumerate(s.shape)])


def _io(req: LaneRequest, mlmodel) -> IO:
    """coremltools may rename features: pair them with the source's by order."""
    from coremltools.proto.FeatureTypes_pb2 import ArrayFeatureType

    desc = mlmodel.get_spec().description
    dtypes = {"FLOAT32": "fp32", "FLOAT16": "fp16", "INT32": "int32", "DOUBLE": "fp64"}

    def bind(spec, feature) -> Binding:
        dtype = dtypes.get(ArrayFeatureType.ArrayDataType.Name(feature.type.multiArrayType.dataType), "fp32")
        shape = tuple(-1 if i in spec.dynamic else d for i, d in enumerate(spec.shape))
        return Binding(spec.name, feature.name, shape, dtype)

    return IO(tuple(bind(s, f) for s, f in zip(req.inputs, desc.input, strict=True)),
              tuple(bind(s, f) for s, f in zip(req.outputs, desc.output, strict=True)))
