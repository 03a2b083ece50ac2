"""Read and rewrite .tflite files without TensorFlow.

A .tflite file is a flatbuffer of TensorFlow Lite's schema. ai-edge-litert (the runtime the lane
already needs) ships the schema's generated Python bindings, object API included
(`ai_edge_litert.schema_py_generated`), so reading op counts and editing tensors needs neither
TensorFlow nor a copy of the schema of our own.
"""

from __future__ import annotations

from collections import Counter
from functools import cache
from types import ModuleType

import numpy as np

from bridge.base.lazy import require


@cache
def schema() -> ModuleType:
    return require("ai_edge_litert.schema_py_generated")


@cache
def _builtin_names() -> dict[int, str]:
    fb = schema()
    return {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}


def load(buf: bytes):
    """The whole model as mutable Python objects (the flatbuffers object API's `ModelT`)."""
    return schema().ModelT.InitFromPackedBuf(bytearray(buf), 0)


def save(model) -> bytes:
    flatbuffers = require("flatbuffers")
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def code_name(code) -> str:
    """An operator code's name: the builtin's (`CONV_2D`) or the custom op's (`FlexErf`, `ONNX_LPPOOL`)."""
    custom = code.customCode if hasattr(code, "customCode") else code.CustomCode()
    if custom:
        return custom.decode() if isinstance(custom, bytes) else str(custom)
    builtin = code.builtinCode if hasattr(code, "builtinCode") else code.BuiltinCode()
    deprecated = code.deprecatedBuiltinCode if hasattr(code, "deprecatedBuiltinCode") else code.DeprecatedBuiltinCode()
    number = max(builtin, deprecated)
    return _builtin_names().get(number, str(number))


def op_counts(buf: bytes) -> Counter:
    """Operator name -> count over every subgraph. Flex (Select TF) ops appear as `Flex<Op>`,
    other custom ops under their custom name."""
    model = schema().Model.GetRootAs(buf, 0)
    names = [code_name(model.OperatorCodes(i)) for i in range(model.OperatorCodesLength())]
    counts: Counter = Counter()
    for s in range(model.SubgraphsLength()):
        sub = model.Subgraphs(s)
        for o in range(sub.OperatorsLength()):
            counts[names[sub.Operators(o).OpcodeIndex()]] += 1
    return counts


def flex_ops(counts: Counter) -> list[str]:
    return sorted(name[4:] for name in counts if name.startswith("Flex"))


def custom_ops(counts: Counter) -> list[str]:
    """Custom ops other than Flex: kernels no stock runtime has (onnx2tf's `ONNX_*` fallbacks)."""
    builtin = set(_builtin_names().values())
    return sorted(n for n in counts if n not in builtin and not n.startswith("Flex"))


def constant(model, tensor) -> np.ndarray | None:
    """A tensor's stored bytes as a flat uint8 array, or None for an activation."""
    data = model.buffers[tensor.buffer].data if tensor.buffer < len(model.buffers) else None
    return None if data is None or len(data) == 0 else np.asarray(data, dtype=np.uint8)


def dequantized(model, tensor, dtype=np.float32) -> np.ndarray:
    """A quantized constant's real values, (q - zero point) * scale (per channel where it has one
    scale per channel), worked out in float64 and given as `dtype`."""
    fb = schema()
    stored = {fb.TensorType.INT8: "<i1", fb.TensorType.INT16: "<i2", fb.TensorType.INT32: "<i4",
              fb.TensorType.INT64: "<i8", fb.TensorType.UINT8: "u1"}[tensor.type]
    shape = tuple(tensor.shape) if tensor.shape is not None else ()
    q = constant(model, tensor).view(stored).reshape(shape).astype(np.float64)
    scale = np.asarray(tensor.quantization.scale, np.float64)
    zero = np.asarray(tensor.quantization.zeroPoint if tensor.quantization.zeroPoint is not None else [0], np.float64)
    if scale.size > 1:
        axis = tensor.quantization.quantizedDimension
        view = [1] * len(shape)
        view[axis] = scale.size
        scale, zero = scale.reshape(view), zero.reshape(view) if zero.size > 1 else zero
    return ((q - zero) * scale).astype(dtype, copy=False)


def opcode_index(model, builtin: int) -> int:
    """The index of `builtin`'s operator code, added to the model if it has none."""
    fb = schema()
    for i, code in enumerate(model.operatorCodes):
        if not code.customCode and max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            return i
    code = fb.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, 127)  # the schema's "use builtinCode" placeholder
    code.version = 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def buffer_users(model) -> Counter:
    """Buffer index -> how many tensors (over every subgraph) store their data in it."""
    return Counter(t.buffer for sg in model.subgraphs for t in sg.tensors)


def add_buffer(model, data: np.ndarray) -> int:
    buffer = schema().BufferT()
    buffer.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=np.uint8)
    model.buffers.append(buffer)
    return len(model.buffers) - 1


# Builtins that write their state into variable tensors, kept from one call to the next.
STATEFUL = frozenset({"UNIDIRECTIONAL_SEQUENCE_LSTM", "UNIDIRECTIONAL_SEQUENCE_RNN", "BIDIRECTIONAL_SEQUENCE_LSTM",
                      "BIDIRECTIONAL_SEQUENCE_RNN", "LSTM", "RNN", "SVDF", "ASSIGN_VARIABLE"})


def stateful_ops(counts: Counter) -> list[str]:
    """Ops whose state carries over between calls. (A variable tensor alone does not: onnx2tf marks
    a GRU's zero initial state variable, and no op writes it.)"""
    return sorted(n for n in counts if n in STATEFUL)
