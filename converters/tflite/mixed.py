"""`int8-mixed`: the calibrated int8 file with chosen ops computing in float32 again.

ai-edge-litert 2.1.2's quantizer (`QuantizeModel`) takes no list of ops or nodes to leave float
(TensorFlow's converter has `denylisted_ops`/`denylisted_nodes`; the calibration wrapper of
ai-edge-litert only `(io types, allow_float, activation and bias types, per-channel flags)` or a
single op to quantize). So the float islands are cut into the integer file afterwards:

    ... int8 -> [DEQUANTIZE] -> float op -> [QUANTIZE] -> int8 ...

Each kept op reads float32: its int8 activations through a DEQUANTIZE (or the float output of a
kept producer directly), its quantized constants as the float32 values of the float file it was
made from (same tensor name), or dequantized in numpy where the float file has no tensor of that
name. Its outputs are float32 tensors; a QUANTIZE with the calibrated scale writes the original
int8 tensor for the readers that stayed integer (none when every reader is kept and the tensor is
no graph output). Stock float kernels run the kept ops: an operator code's version only selects
among kernels of one builtin, and every builtin's float kernel is registered for its versions.

With `hybrid`, a kept CONV_2D, DEPTHWISE_CONV_2D or FULLY_CONNECTED keeps int8 weights instead:
the runtime's hybrid kernel reads them with float activations (quantized at run time), in the
layout `dynamic-int8` writes (`dynamic.py`: symmetric per output channel, made from the float
file's weights, not the calibrated ones, whose scales were chosen for int8 activations; 1024
elements or more). A kept GATHER's table (an embedding: all-MiniLM-L6-v2's word embeddings are
half its float32 bytes) stays int8 too, read through a DEQUANTIZE (symmetric per row, from the float
file's values). Their biases and the other kept ops read float32 as above.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from bridge.converters.tflite import flatbuffer as fbu
from bridge.converters.tflite.dynamic import HYBRID, MIN_ELEMENTS, hybrid_kernel, int8_weight


def keep_float(int8: bytes, fp32: bytes, names: Collection[str], readers: str = "none",
               public: Collection[str] = (), nodes: Collection[str] = (),
               hybrid: bool = False) -> tuple[bytes, list[str], list[str]]:
    """`int8` with every op that writes a tensor named in `names` computing in float32; returns the
    file, the names that matched no quantized op's output (in the order given), and the outputs of
    every op kept. With `readers` "weightless", the ops reading a kept op's outputs are kept too where
    they hold no weights (an ADD, a MUL by a per-channel scale: keeping them costs no bytes); with
    "all", every one: keeping an op alone removes its own arithmetic's error but not the int8
    rounding of its output, which its integer readers still read through the QUANTIZE after it.

    `public`: the file's tensors that stand for ONNX tensors; `nodes`: the ONNX nodes kept. onnx2tf
    writes some nodes as several ops (LayerNormalization as mean, variance, ...; Where as
    cond * x + (1 - cond) * y; ReduceL2 as square, sum, sqrt) whose inner tensors are named after
    the node or its output, `<node>_<what>` or `<output>_<what>`, and stand for no ONNX tensor:
    keeping the node keeps every one of them (left int8, the LayerNorms' variances alone held
    all-MiniLM-L6-v2 at -13 dB with every named layer kept).

    `hybrid`: the kept ops with a hybrid kernel keep int8 weights (module docstring)."""
    from bridge.converters.tflite.quantize import _float_weights

    model = fbu.load(int8)
    floats = _float_weights(fp32)
    sg = model.subgraphs[0]
    wanted = set(names)
    fb = fbu.schema()
    # a QUANTIZE or DEQUANTIZE converts between int8 and float: never kept (its output must stay integer)
    dequantize = fbu.opcode_index(model, fb.BuiltinOperator.DEQUANTIZE)
    convert = {fbu.opcode_index(model, fb.BuiltinOperator.QUANTIZE), dequantize}
    # A graph output the quantizer made integer keeps its name on the DEQUANTIZE that hands it back
    # in float (`y`); the op computing it writes `y_int8`: that op is the one a name means.
    behind = {_name(sg.tensors[op.inputs[0]]): _name(sg.tensors[op.outputs[0]]) for op in sg.operators
              if op.opcodeIndex == dequantize and _name(sg.tensors[op.outputs[0]]) in wanted}
    wanted |= set(behind)
    computing = [i for i, op in enumerate(sg.operators) if op.opcodeIndex not in convert]
    kept = {i for i in computing if any(_name(sg.tensors[t]) in wanted
                                        for t in sg.operators[i].outputs if _quantized(sg.tensors[t]))}
    found = {_name(sg.tensors[t]) for i in kept for t in sg.operators[i].outputs}
    found |= {behind[n] for n in found if n in behind}
    if public:
        known, stems = set(public), tuple(f"{n}_" for n in (*found, *nodes))
        kept |= {i for i in computing for t in sg.operators[i].outputs
                 if _quantized(sg.tensors[t]) and _name(sg.tensors[t]).startswith(stems)
                 and _name(sg.tensors[t]) not in known}
    if readers != "none":
        made = {t for i in kept for t in sg.operators[i].outputs}
        kept |= {i for i in computing if any(t in made for t in sg.operators[i].inputs)
                 and any(_quantized(sg.tensors[t]) for t in sg.operators[i].outputs)
                 and (readers == "all" or not _weighted(model, sg, sg.operators[i]))}
    outputs = [_name(sg.tensors[t]) for i in sorted(kept) for t in sg.operators[i].outputs]
    _Islands(model, sg, floats, hybrid).cut(kept)
    _drop_unread_conversions(sg, convert)
    _drop_unread_constants(model, sg)
    return fbu.save(model), [n for n in names if n not in found], outputs


def _drop_unread_conversions(sg, convert: set[int]) -> None:
    """Drop the QUANTIZEs and DEQUANTIZEs nothing reads any more: a kept first layer reads the
    float input itself, and the input's QUANTIZE has no reader left."""
    while True:
        outputs = sg.outputs if sg.outputs is not None else ()  # a numpy array: `or` raised with two or more
        read = {t for op in sg.operators for t in op.inputs if t >= 0} | set(outputs)
        kept = [op for op in sg.operators if op.opcodeIndex not in convert or any(t in read for t in op.outputs)]
        if len(kept) == len(sg.operators):
            return
        sg.operators = kept


def _drop_unread_constants(model, sg) -> None:
    """Empty the buffers of the int8 constants no op reads any more (a kept op reads its float twin),
    so a kept layer's weights are stored once, in float32."""
    read = {t for op in sg.operators for t in (*op.inputs, *op.outputs) if t >= 0}
    read |= set(sg.inputs if sg.inputs is not None else ()) | set(sg.outputs if sg.outputs is not None else ())
    used = {sg.tensors[t].buffer for t in read}
    for t, tensor in enumerate(sg.tensors):
        if t not in read and tensor.buffer not in used and fbu.constant(model, tensor) is not None:
            model.buffers[tensor.buffer].data = None


class _Islands:
    def __init__(self, model, sg, floats: dict[str, np.ndarray], hybrid: bool = False):
        self.model, self.sg, self.floats, self.hybrid = model, sg, floats, hybrid
        self.fb = fbu.schema()
        self.twin: dict[int, int] = {}  # int8 tensor -> its float32 twin
        self.hybrids: dict[int, int] = {}  # int8 weight -> its twin for hybrid kernels
        self.weights: dict[int, int] = {}  # int8 weight -> the float32 tensor a DEQUANTIZE makes of it
        self.quantize = fbu.opcode_index(model, self.fb.BuiltinOperator.QUANTIZE)
        self.dequantize = fbu.opcode_index(model, self.fb.BuiltinOperator.DEQUANTIZE)
        self.made = {t: i for i, op in enumerate(sg.operators) for t in op.outputs}  # tensor -> the op writing it

    def cut(self, kept: set[int]) -> None:
        readers = self._readers()
        outputs = set(self.sg.outputs if self.sg.outputs is not None else ())
        dropped = self._float_readers(kept, readers)
        ops = []
        for i, op in enumerate(self.sg.operators):
            if i in dropped:
                continue
            if i not in kept:
                ops.append(op)
                continue
            loads = [self._float_input(op, k) for k in range(len(op.inputs))]
            ops += [o for o in loads if o is not None]
            ops.append(op)
            for k, t in enumerate(op.outputs):
                if not _quantized(self.sg.tensors[t]):
                    continue
                op.outputs[k] = self._float_twin(t)
                if t in outputs or any(r not in kept and r not in dropped for r in readers.get(t, ())):
                    ops.append(self._op(self.fb.BuiltinOperator.QUANTIZE, self.twin[t], t))
        self.sg.operators = ops

    def _float_readers(self, kept: set[int], readers: dict[int, list[int]]) -> set[int]:
        """The DEQUANTIZEs reading a kept op's output, for a reader the quantizer left float (a DIV
        it has no integer kernel for): dropped, the kept op writing their float tensor itself.
        Through a QUANTIZE and back, the float values would take the int8 tensor's rounding,
        which is what keeping the op removes (a DBNet's 1 + exp(50x) before its reciprocal: a
        range of 1e22 in 256 steps made every value 0 and the output Inf)."""
        dropped: set[int] = set()
        for i in kept:
            for t in self.sg.operators[i].outputs:
                found = [r for r in readers.get(t, ()) if self.sg.operators[r].opcodeIndex == self.dequantize]
                if not found or not _quantized(self.sg.tensors[t]):
                    continue
                self.twin[t] = self.sg.operators[found[0]].outputs[0]
                for r in found[1:]:  # more than one: their readers read the first's tensor
                    self._rename(self.sg.operators[r].outputs[0], self.twin[t])
                dropped.update(found)
        return dropped

    def _rename(self, old: int, new: int) -> None:
        for op in self.sg.operators:
            op.inputs = [new if t == old else t for t in op.inputs]
        if self.sg.outputs is not None:
            self.sg.outputs = [new if t == old else t for t in self.sg.outputs]

    def _readers(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for i, op in enumerate(self.sg.operators):
            for t in op.inputs:
                if t >= 0:
                    out.setdefault(t, []).append(i)
        return out

    def _float_input(self, op, k: int):
        """Point input `k` of a kept op at float32 values; returns the DEQUANTIZE it needs, if any."""
        t = op.inputs[k]
        if t < 0 or not _quantized(self.sg.tensors[t]):
            return None
        tensor = self.sg.tensors[t]
        if fbu.constant(self.model, tensor) is not None:
            if self._hybrid_input(op, k):
                op.inputs[k] = self._hybrid_weight(op, t)
                return None
            if self.hybrid and fbu.code_name(self.model.operatorCodes[op.opcodeIndex]) in TABLES \
                    and _is_weight(tensor):
                return self._dequantized_weight(op, k)
            op.inputs[k] = self._float_constant(t)
            return None
        if t in self.twin:  # a kept op made it, or an earlier kept reader dequantized it
            op.inputs[k] = self.twin[t]
            return None
        source = self._quantized_from(t)
        if source is not None:  # a float op's output the quantizer rounded for int8 readers: read it as it was
            op.inputs[k] = self.twin[t] = source
            return None
        op.inputs[k] = self._float_twin(t)
        return self._op(self.fb.BuiltinOperator.DEQUANTIZE, t, self.twin[t])

    def _hybrid_input(self, op, k: int) -> bool:
        """Whether input `k` of a kept op is a weight its hybrid kernel reads in int8."""
        name = fbu.code_name(self.model.operatorCodes[op.opcodeIndex])
        shape = self.sg.tensors[op.inputs[k]].shape
        return self.hybrid and name in HYBRID and k == 1 and shape is not None \
            and int(np.prod(shape)) >= MIN_ELEMENTS

    def _hybrid_weight(self, op, t: int) -> int:
        """The int8 twin of weight `t` for `op`'s hybrid kernel, as `dynamic.dynamic_int8` writes it."""
        axis = hybrid_kernel(self.model, op)
        if t not in self.hybrids:
            tensor = self.sg.tensors[t]
            self.hybrids[t] = self._tensor(tensor, "_hybrid", None)
            int8_weight(self.model, self.sg.tensors[self.hybrids[t]], self._float_values(tensor), axis)
        return self.hybrids[t]

    def _dequantized_weight(self, op, k: int):
        """Point input `k` (a table of an op with no hybrid kernel: a GATHER's embeddings) at
        float32 values a DEQUANTIZE makes at run time from int8 ones, symmetric per slice of its
        first axis (a table's row), made from the float file's weights; returns that DEQUANTIZE,
        or None where an earlier kept op made it."""
        t = op.inputs[k]
        if t in self.weights:
            op.inputs[k] = self.weights[t]
            return None
        tensor = self.sg.tensors[t]
        stored = self._tensor(tensor, "_int8", None)
        int8_weight(self.model, self.sg.tensors[stored], self._float_values(tensor), 0)
        op.inputs[k] = self.weights[t] = self._tensor(tensor, "_float", None)
        return self._op(self.fb.BuiltinOperator.DEQUANTIZE, stored, self.weights[t])

    def _quantized_from(self, t: int) -> int | None:
        """The float32 tensor a QUANTIZE made `t` from (the output of an op left float), if one did."""
        i = self.made.get(t)
        op = self.sg.operators[i] if i is not None else None
        if op is None or op.opcodeIndex != self.quantize:
            return None
        source = op.inputs[0]
        tensor = self.sg.tensors[source]
        if tensor.type != self.fb.TensorType.FLOAT32 or fbu.constant(self.model, tensor) is not None:
            return None
        return source

    def _float_twin(self, t: int) -> int:
        if t not in self.twin:
            self.twin[t] = self._tensor(self.sg.tensors[t], "_float", None)
        return self.twin[t]

    def _float_constant(self, t: int) -> int:
        tensor = self.sg.tensors[t]
        return self._tensor(tensor, "_float", fbu.add_buffer(self.model, self._float_values(tensor).astype("<f4")))

    def _float_values(self, tensor) -> np.ndarray:
        """A quantized constant's values in the float file (same name and shape), or dequantized."""
        values = self.floats.get(_name(tensor))
        shape = tuple(tensor.shape) if tensor.shape is not None else ()
        if values is None or values.shape != shape:
            values = fbu.dequantized(self.model, tensor)
        return values

    def _tensor(self, like, suffix: str, buffer: int | None) -> int:
        t = self.fb.TensorT()
        t.shape, t.shapeSignature = like.shape, like.shapeSignature
        t.type = self.fb.TensorType.FLOAT32
        t.buffer = 0 if buffer is None else buffer
        t.name = f"{_name(like)}{suffix}"
        self.sg.tensors.append(t)
        return len(self.sg.tensors) - 1

    def _op(self, builtin: int, source: int, target: int):
        op = self.fb.OperatorT()
        op.opcodeIndex = fbu.opcode_index(self.model, builtin)
        op.inputs, op.outputs = [source], [target]
        return op


def _name(tensor) -> str:
    return tensor.name.decode() if isinstance(tensor.name, bytes) else (tensor.name or "")


TABLES = frozenset({"GATHER"})  # ops whose large constant operand stays int8 behind a DEQUANTIZE with `hybrid`


def _is_weight(tensor) -> bool:
    """A constant large enough to be worth int8 bytes: two or more non-unit axes (a kernel, a matrix,
    a table) and at least as many elements as `dynamic-int8` quantizes."""
    shape = tensor.shape if tensor.shape is not None else ()
    return sum(1 for d in shape if d > 1) >= 2 and int(np.prod(shape)) >= MIN_ELEMENTS


def _weighted(model, sg, op) -> bool:
    """Whether the op reads a constant with two or more non-unit axes (a kernel or a matrix), not
    a scalar or a per-channel vector."""
    for t in op.inputs:
        tensor = sg.tensors[t] if t >= 0 else None
        if tensor is not None and fbu.constant(model, tensor) is not None and tensor.shape is not None \
                and sum(1 for d in tensor.shape if d > 1) >= 2:
            return True
    return False


def _quantized(tensor) -> bool:
    q = tensor.quantization
    return q is not None and q.scale is not None and len(q.scale) > 0
