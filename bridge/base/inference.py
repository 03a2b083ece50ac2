"""onnx's shape inference on a model's structure alone.

`onnx.shape_inference.infer_shapes` serializes the whole model, weights included, into C++ and
parses the result back: on a 100 MB ResNet50 that is 0.33 s and two more copies of the weights in
memory, for types and shapes that never depend on a weight's values. `infer` runs it on a copy
whose large tensors keep their name, type and dims but no bytes (2 ms there). Small constants keep
their values: shape inference reads the values of shape-like inputs (Reshape's shape, Slice's
starts, Resize's sizes), which are a handful of integers.

Nothing here imports a framework at module level.
"""

from __future__ import annotations

from bridge.base.lazy import require

KEEP_BYTES = 1024  # constants up to this size keep their values (a shape-like input is far smaller)


def infer(model, **kwargs):
    """`onnx.shape_inference.infer_shapes(model, **kwargs)` on `weightless(model)`: the result has
    the inferred types and shapes, and no weight bytes."""
    return require("onnx").shape_inference.infer_shapes(weightless(model), **kwargs)


def weightless(model):
    """A copy of `model` whose main-graph initializers over `KEEP_BYTES` have no values (name,
    type and dims kept). Every other field is copied by reflection, so fields onnx adds later come
    along."""
    return _split(model)[0]


def size_bound(model) -> int:
    """At least `model.ByteSize()`, measured without encoding the model: protobuf's ByteSize (upb)
    builds the whole encoding to count it, 0.15 s on ResNet50's 102 MB, and an export asked it three
    times. The weightless copy's size, plus each initializer left out of it at its own size and
    framing (a tag and a length, under 16 bytes). The copy is made field by field, so a model or
    graph with fields this onnx does not know (kept by protobuf as unknown fields) is measured
    exactly instead."""
    from google.protobuf.unknown_fields import UnknownFieldSet

    if len(UnknownFieldSet(model)) or len(UnknownFieldSet(model.graph)):
        return model.ByteSize()
    light, left_out = _split(model)
    return light.ByteSize() + left_out


def _split(model):
    """The weightless copy and the bytes (framing included) of the initializers it leaves out."""
    light = require("onnx").ModelProto()
    _copy_fields(model, light, skip="graph")
    _copy_fields(model.graph, light.graph, skip="initializer")
    left_out = 0
    for tensor in model.graph.initializer:
        size = tensor.ByteSize()
        if size <= KEEP_BYTES:
            light.graph.initializer.add().CopyFrom(tensor)
            continue
        left_out += size + 16
        shell = light.graph.initializer.add()
        shell.name, shell.data_type = tensor.name, tensor.data_type
        shell.dims.extend(tensor.dims)
    return light, left_out


def _copy_fields(source, target, *, skip: str) -> None:
    for field, value in source.ListFields():
        if field.name == skip:
            continue
        if field.is_repeated:
            getattr(target, field.name).extend(value)
        elif field.message_type is not None:
            getattr(target, field.name).CopyFrom(value)
        else:
            setattr(target, field.name, value)
