"""The `fp16` mode: float16 weights, float32 compute, made from the float32 file.

Every float32 constant is stored as float16 and read through a DEQUANTIZE op that turns it back
into float32 before use. That is the layout TensorFlow's converter writes for
`supported_types=[tf.float16]` (weights and biases alike), so stock runtimes run it with their
float32 kernels and XNNPACK folds the DEQUANTIZE of constant weights when it prepares the graph.
onnx2tf 2.x's own `*_float16.tflite` computes in float16 end to end (float16 inputs and
activations), which ai-edge-litert's float kernels reject, and which is a different mode.

Constants float16 cannot hold stay float32 (`_fits_float16`): beyond its range (an attention mask's
-3.4e38 fill would become -inf and the softmax after it NaN; TensorFlow clamps such values to
-65504, which silently rescales a gain of 1e5 by 0.655), and small constants whose nonzero values
would round to 0 (an epsilon of 1e-12 guarding a division or square root). Large weight tensors
that hold a few tiny values are stored in float16 like the rest, as TensorFlow does.
"""

from __future__ import annotations

import numpy as np

from bridge.converters.tflite import flatbuffer as fbu

FP16_MAX = float(np.finfo(np.float16).max)
SMALL = 16  # elements: scalars and short vectors (epsilons, scales) are checked for values lost to 0


def float16_weights(buf: bytes) -> bytes:
    """`buf` (a float32 .tflite) with its float32 constants stored as float16 behind DEQUANTIZE ops."""
    fb = fbu.schema()
    model = fbu.load(buf)
    dequantize = fbu.opcode_index(model, fb.BuiltinOperator.DEQUANTIZE)
    users = fbu.buffer_users(model)
    halves: dict[int, int] = {}  # float32 buffer -> its float16 copy
    for sg in model.subgraphs:
        graph_io = {*(sg.inputs if sg.inputs is not None else ()), *(sg.outputs if sg.outputs is not None else ())}
        loads = []
        for index, tensor in enumerate(list(sg.tensors)):
            values = _float32_constant(model, tensor)
            if values is None or index in graph_io or not _fits_float16(values):
                continue
            if tensor.buffer not in halves:
                halves[tensor.buffer] = fbu.add_buffer(model, values.astype("<f2"))
            sg.tensors.append(_half_tensor(fb, tensor, halves[tensor.buffer]))
            users[tensor.buffer] -= 1
            tensor.buffer = 0  # buffer 0 is the schema's empty sentinel: the tensor becomes DEQUANTIZE's output
            op = fb.OperatorT()
            op.opcodeIndex = dequantize
            op.inputs = [len(sg.tensors) - 1]
            op.outputs = [index]
            loads.append(op)
        sg.operators = loads + list(sg.operators or [])  # loads first keeps the order topological
    for old in halves:
        if users[old] == 0:
            model.buffers[old].data = None  # no float32 reader left: do not ship the bytes twice
    return fbu.save(model)


def _fits_float16(values: np.ndarray) -> bool:
    if np.any(np.abs(values) > FP16_MAX):
        return False
    small = values.size <= SMALL
    return not (small and np.any((values != 0) & (values.astype(np.float16) == 0)))


def _float32_constant(model, tensor) -> np.ndarray | None:
    fb = fbu.schema()
    if tensor.type != fb.TensorType.FLOAT32 or tensor.isVariable or tensor.sparsity is not None:
        return None
    data = fbu.constant(model, tensor)
    return None if data is None else data.view("<f4")


def _half_tensor(fb, tensor, buffer: int):
    half = fb.TensorT()
    half.shape = tensor.shape
    half.shapeSignature = tensor.shapeSignature
    half.type = fb.TensorType.FLOAT16
    half.buffer = buffer
    name = tensor.name.decode() if isinstance(tensor.name, bytes) else (tensor.name or "")
    half.name = f"{name}_fp16"
    return half
