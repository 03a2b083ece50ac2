"""The `dynamic-int8` mode: int8 weights, float activations quantized at run time by the runtime's
hybrid kernels, made from the float32 file without calibration.

The layout is TensorFlow's for `optimizations=[DEFAULT]` without a representative dataset (read
off its files): the weight operand of CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED becomes int8,
symmetric, per output channel, when it has at least 1024 elements; biases and everything else stay
float32; FULLY_CONNECTED quantizes its inputs asymmetrically. There are no DEQUANTIZE ops: hybrid
kernels read the int8 weights directly. A weight another op also reads stays float.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from bridge.converters.tflite import flatbuffer as fbu

# op -> (the weight's output-channel axis, the op version that introduced its per-channel hybrid
# kernel: a runtime older than that refuses the file instead of running it wrongly)
HYBRID = {"CONV_2D": (0, 5), "DEPTHWISE_CONV_2D": (3, 6), "FULLY_CONNECTED": (0, 12)}
MIN_ELEMENTS = 1024  # smaller weights stay float, as in TensorFlow's converter


def dynamic_int8(buf: bytes) -> bytes:
    """`buf` (a float32 .tflite) with its large conv and dense weights in int8 for hybrid kernels."""
    model = fbu.load(buf)
    users = fbu.buffer_users(model)
    for sg in model.subgraphs:
        readers = Counter(i for op in sg.operators or [] for i in (op.inputs if op.inputs is not None else ()))
        for op in sg.operators or []:
            name = fbu.code_name(model.operatorCodes[op.opcodeIndex])
            if name not in HYBRID or op.inputs is None or len(op.inputs) < 2 or readers[op.inputs[1]] != 1:
                continue
            weight = sg.tensors[op.inputs[1]]
            values = _weights(model, weight)
            if values is None or values.size < MIN_ELEMENTS:
                continue
            users[weight.buffer] -= 1
            if users[weight.buffer] == 0:
                model.buffers[weight.buffer].data = None  # the float32 bytes have no reader left
            int8_weight(model, weight, values, hybrid_kernel(model, op))
    return fbu.save(model)


def hybrid_kernel(model, op) -> int:
    """Ask for `op`'s per-channel hybrid kernel (a HYBRID op): its code raised to that kernel's
    version, a FULLY_CONNECTED quantizing its inputs asymmetrically; returns its weight's channel axis."""
    code = model.operatorCodes[op.opcodeIndex]
    axis, version = HYBRID[fbu.code_name(code)]
    code.version = max(code.version, version)
    if fbu.code_name(code) == "FULLY_CONNECTED" and op.builtinOptions is not None:
        op.builtinOptions.asymmetricQuantizeInputs = True
    return axis


def int8_weight(model, tensor, values: np.ndarray, axis: int) -> None:
    """`tensor` holding `values` as symmetric int8 per channel along `axis` (`quantize_per_channel`)."""
    q, scale = quantize_per_channel(values, axis)
    tensor.buffer = fbu.add_buffer(model, q)
    tensor.type = fbu.schema().TensorType.INT8
    tensor.quantization = per_channel_params(scale, axis)


def quantize_per_channel(values: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per channel along `axis`, range [-127, 127], exactly as TensorFlow's converter
    makes dynamic-range weights (matched bit for bit on every weight of a MobileNetV2): the scale
    max |w| / 127 and each weight / scale in float64, rounded half away from zero; the file stores
    the scale in float32."""
    reduce = tuple(a for a in range(values.ndim) if a != axis)
    scale = np.max(np.abs(values.astype(np.float64)), axis=reduce) / 127.0
    scale = np.where(scale > 0, scale, 1.0)
    shape = [1] * values.ndim
    shape[axis] = -1
    r = values.astype(np.float64) / scale.reshape(shape)
    q = np.clip(np.sign(r) * np.floor(np.abs(r) + 0.5), -127, 127).astype(np.int8)
    return q, scale.astype(np.float32)


def round_to_int8(values: np.ndarray, scale: np.ndarray, axis: int) -> np.ndarray:
    """Calibrated int8 weights to int8 exactly as TensorFlow's converter makes them for int8
    activations: in float32, times the reciprocal of the (float32) scale, rounded half away from
    zero. (Matched bit for bit on every weight of a MobileNetV2; dividing instead, as ai-edge-litert's
    quantizer does, or in float64, rounds a few weights per layer to the other side of .5.)"""
    scale = np.asarray(scale, np.float32)
    shape = [1] * values.ndim
    if scale.size > 1:
        shape[axis] = -1
    r = values.astype(np.float32) * (np.float32(1.0) / scale.reshape(shape))
    return np.clip(np.sign(r) * np.floor(np.abs(r) + np.float32(0.5)), -127, 127).astype(np.int8)


def _weights(model, tensor) -> np.ndarray | None:
    if tensor.type != fbu.schema().TensorType.FLOAT32 or tensor.sparsity is not None:
        return None
    data = fbu.constant(model, tensor)
    return None if data is None else data.view("<f4").reshape(tensor.shape)


def per_channel_params(scale: np.ndarray, axis: int):
    params = fbu.schema().QuantizationParametersT()
    params.scale = scale.tolist()
    params.zeroPoint = [0] * scale.size
    params.quantizedDimension = axis
    return params
