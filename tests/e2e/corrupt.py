"""Artifacts with one layer made wrong, as a broken converter would make them: weights scaled, an
attribute or fused activation changed. Each edits a copy of a real artifact at the file level
(ONNX protobuf, TFLite flatbuffer, Core ML spec and weight.bin), never through our converters."""

from __future__ import annotations

import re
import shutil
import struct
from pathlib import Path

import numpy as np


# -- ONNX ------------------------------------------------------------------------------------
def onnx_nodes(path: Path, op_type: str | None = None) -> list:
    import onnx

    return [n for n in onnx.load(str(path)).graph.node if op_type is None or n.op_type == op_type]


def scale_onnx_weight(src: Path, dst: Path, node: str, factor: float) -> Path:
    """The node's weight (its second input, an initializer) times `factor`."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    target = next(n for n in model.graph.node if n.name == node)
    init = next(t for t in model.graph.initializer if t.name == target.input[1])
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(factor), init.name))
    onnx.save(model, str(dst))
    return dst


def set_onnx_attribute(src: Path, dst: Path, node: str, name: str, value) -> Path:
    import onnx

    model = onnx.load(str(src))
    target = next(n for n in model.graph.node if n.name == node)
    kept = [a for a in target.attribute if a.name != name]
    del target.attribute[:]
    target.attribute.extend([*kept, onnx.helper.make_attribute(name, value)])
    onnx.save(model, str(dst))
    return dst


# -- TFLite ----------------------------------------------------------------------------------
def _tflite(src: Path):
    from ai_edge_litert import schema_py_generated as fb

    return fb, fb.ModelT.InitFromPackedBuf(bytearray(src.read_bytes()), 0)


def _save_tflite(model, dst: Path) -> Path:
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    dst.write_bytes(bytes(builder.Output()))
    return dst


def tflite_ops(src: Path, *names: str) -> list[int]:
    """Indices (in the main subgraph) of the ops whose builtin name is one of `names`."""
    fb, model = _tflite(src)
    codes = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    found = []
    for i, op in enumerate(model.subgraphs[0].operators):
        code = model.operatorCodes[op.opcodeIndex]
        if codes.get(max(code.builtinCode, code.deprecatedBuiltinCode)) in names:
            found.append(i)
    return found


def scale_tflite_weights(src: Path, dst: Path, op_index: int, factor: float) -> Path:
    """Op `op_index`'s float weights (its second input) times `factor`."""
    _, model = _tflite(src)
    op = model.subgraphs[0].operators[op_index]
    buf = model.buffers[model.subgraphs[0].tensors[op.inputs[1]].buffer]
    weights = np.frombuffer(bytes(bytearray(buf.data)), np.float32) * np.float32(factor)
    buf.data = list(weights.astype(np.float32).tobytes())
    return _save_tflite(model, dst)


def set_tflite_activation(src: Path, dst: Path, op_index: int, activation: str) -> Path:
    """Op `op_index`'s fused activation replaced (a lowering that drops or changes a Relu6)."""
    fb, model = _tflite(src)
    op = model.subgraphs[0].operators[op_index]
    op.builtinOptions.fusedActivationFunction = getattr(fb.ActivationFunctionType, activation)
    return _save_tflite(model, dst)


# -- Core ML ---------------------------------------------------------------------------------
def coreml_key(onnx_tensor: str) -> str:
    """How our converter names the MIL op computing an ONNX tensor."""
    return re.sub(r"[^A-Za-z0-9_]", "_", onnx_tensor)


def _spec_ops(pkg: Path):
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    spec.ParseFromString((pkg / "Data/com.apple.CoreML/model.mlmodel").read_bytes())
    fn = spec.mlProgram.functions["main"]
    return spec, fn.block_specializations[fn.opset].operations


def scale_coreml_weight(src: Path, dst: Path, op_key: str, factor: float) -> Path:
    """The weight of the MIL op named `op_key` (its const `<op_key>_weight...`) times `factor`,
    edited in place in weight.bin (fp16 or fp32)."""
    shutil.copytree(src, dst)
    _, ops = _spec_ops(dst)
    const = next(op for op in ops if op.type == "const" and op.outputs[0].name.startswith(f"{op_key}_weight"))
    offset = const.attributes["val"].blobFileValue.offset
    weights = dst / "Data/com.apple.CoreML/weights/weight.bin"
    data = bytearray(weights.read_bytes())
    sentinel, dtype, size, start = struct.unpack_from("<IIQQ", data, offset)
    assert sentinel == 0xDEADBEEF, "not a blob header"
    np_dtype = {1: np.float16, 2: np.float32}[dtype]
    values = np.frombuffer(bytes(data[start:start + size]), np_dtype) * factor
    data[start:start + size] = values.astype(np_dtype).tobytes()
    weights.write_bytes(bytes(data))
    return dst


def set_coreml_scalar(src: Path, dst: Path, const_prefix: str, value: float) -> Path:
    """The scalar const named `<const_prefix>...` set to `value` (e.g. a clip's beta: a lowering
    that clips at the wrong bound)."""
    shutil.copytree(src, dst)
    spec, ops = _spec_ops(dst)
    const = next(op for op in ops if op.type == "const" and op.outputs[0].name.startswith(const_prefix))
    tensor = const.attributes["val"].immediateValue.tensor
    if tensor.HasField("bytes"):  # fp16 scalars are stored as raw bytes
        tensor.bytes.values = np.float16(value).tobytes()
    else:
        tensor.floats.values[:] = [value]
    (dst / "Data/com.apple.CoreML/model.mlmodel").write_bytes(spec.SerializeToString())
    return dst
