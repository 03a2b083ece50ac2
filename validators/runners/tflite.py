"""TFLite artifacts on ai-edge-litert, the runtime Android ships.

Runs in a process that never imported TensorFlow (see `bridge.stages`): there, as on a phone,
a model with Flex ops fails instead of silently borrowing TensorFlow's kernels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bridge.base.arrays import Feed
from bridge.base.lazy import require


class TFLiteRunner:
    runtime = "ai-edge-litert"

    def load(self, path: str) -> None:
        self.path = path
        self._by_shape: dict[tuple, object] = {}
        self.runner = self._runner(None)
        self.inputs = self.runner.get_input_details()
        self.outputs = self.runner.get_output_details()

    def _runner(self, shapes: dict[str, tuple] | None):
        """One interpreter per set of input shapes, resized before its first allocation: XNNPack
        (the default CPU delegate, as on phones) cannot reshape a prepared graph, so a dynamic axis
        is validated the way an app would run it, with an interpreter built for that size."""
        key = tuple(sorted(shapes.items())) if shapes else None
        if key not in self._by_shape:
            litert = require("ai_edge_litert.interpreter")
            interp = litert.Interpreter(model_path=self.path, num_threads=1)
            if shapes:
                details = interp.get_signature_runner().get_input_details()
                for name, shape in shapes.items():
                    interp.resize_tensor_input(details[name]["index"], list(shape), strict=True)
                interp.allocate_tensors()
            self._by_shape[key] = interp.get_signature_runner()
        return self._by_shape[key]

    def infer(self, feed: Feed) -> Feed:
        args = {name: _quantize(feed[name], d) for name, d in self.inputs.items()}
        declared = {name: tuple(d["shape"]) for name, d in self.inputs.items()}
        shapes = {n: a.shape for n, a in args.items()}
        runner = self.runner if shapes == declared else self._runner(shapes)
        out = runner(**args)
        return {name: _dequantize(np.asarray(out[name]), d) for name, d in self.outputs.items()}


def _quantize(x: np.ndarray, d: dict) -> np.ndarray:
    """Integer inputs take real values in the units the model expects: quantize with its params."""
    dtype = np.dtype(d["dtype"])
    scale, zero = d["quantization"]
    if dtype.kind in "iu" and x.dtype.kind == "f" and scale:
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)
    return x.astype(dtype, copy=False)


def _dequantize(y: np.ndarray, d: dict) -> np.ndarray:
    scale, zero = d["quantization"]
    if y.dtype.kind in "iu" and scale:
        return (y.astype(np.float32) - zero) * np.float32(scale)
    return y


def describe(path: str) -> dict:
    """The artifact's signature tensors and the mode its tensor types reveal (for `bridge validate`
    and `bridge inspect`). Reads through the interpreter, so it needs no TensorFlow."""
    litert = require("ai_edge_litert.interpreter")
    interp = litert.Interpreter(model_path=path)
    runner = interp.get_signature_runner()

    def tensors(details: dict) -> list[dict]:
        return [{"name": name, "shape": [int(v) for v in d["shape_signature"]], "dtype": np.dtype(d["dtype"]).name,
                 "quantization": list(d["quantization"]) if d["quantization"][0] else None}
                for name, d in details.items()]

    inputs, outputs = tensors(runner.get_input_details()), tensors(runner.get_output_details())
    dtypes = {np.dtype(t["dtype"]).name for t in interp.get_tensor_details()}
    ops = {}
    for op in interp._get_ops_details():  # noqa: SLF001 - the only op listing litert offers
        ops[op["op_name"]] = ops.get(op["op_name"], 0) + 1
    return {"inputs": inputs, "outputs": outputs, "mode": infer_mode(inputs, dtypes, ops), "ops": ops}


def infer_mode(inputs: list[dict], dtypes: set[str], ops: dict[str, int]) -> str:
    """Tensor types tell the quantization: int8 I/O, int16 activations, int8 activations
    (quantize ops present), int8 weights only, float16 weights, or plain float32."""
    if any(t["dtype"] in ("int8", "uint8") and t["quantization"] for t in inputs):
        return "int8-io"
    if "int16" in dtypes:
        return "int16x8"
    if "int8" in dtypes and "QUANTIZE" in ops:
        return "int8"
    if "int8" in dtypes:
        return "dynamic-int8"
    if "float16" in dtypes:
        return "fp16"
    return "fp32"


class TFLiteTracer:
    """Every tensor a TFLite file computes, for per-layer localisation.

    ai-edge-litert keeps intermediate tensors only with `experimental_preserve_all_tensors`, and
    only for ops its own kernels run: XNNPACK (the default delegate, which parity uses, as phones
    do) would take the ops over and keep nothing. So localisation runs the built-in kernels, which
    can differ from XNNPACK's in the last bits (and in int8 rounding); the report says so.

    Tensors are named by index (`t<index>`), since names in a TFLite file need not be unique; their
    names are the display names. Integer tensors come back dequantized with their own scale and
    zero point. For the isolated profile (`given`), the file is rewritten so that every op reading
    a given tensor reads a new input tensor of the same type and quantization instead: one run then
    gives each op's output from exact inputs.
    """

    runtime = "ai-edge-litert (built-in kernels)"
    note = ("localisation ran ai-edge-litert's built-in kernels without the XNNPACK delegate, keeping every "
            "tensor; parity ran with XNNPACK, so the kernels differ from the parity run's")

    def load(self, path: str) -> None:
        from bridge.validators.localisation.graph import COPY_OPS, TracedGraph, TracedOp

        self.path = path
        interp = self._interpreter(Path(path).read_bytes())
        self.details = {d["index"]: d for d in interp.get_tensor_details()}
        signature = interp.get_signature_runner()
        ops = []
        for op in interp._get_ops_details():  # noqa: SLF001 - the only op listing litert offers
            if op["op_name"] == "DELEGATE":
                continue
            outputs = tuple(f"t{i}" for i in op["outputs"] if i >= 0)
            ops.append(TracedOp(f"{op['op_name']}#{op['index']}", op["op_name"],
                                tuple(f"t{i}" for i in op["inputs"] if i >= 0), outputs,
                                copies=op["op_name"] in COPY_OPS))
        self._graph = TracedGraph(
            tuple(ops),
            {n: f"t{d['index']}" for n, d in signature.get_input_details().items()},
            {n: f"t{d['index']}" for n, d in signature.get_output_details().items()},
            {f"t{i}": d["name"] for i, d in self.details.items()})
        self.traced = [t for op in ops for t in op.outputs]
        self._cut: dict[frozenset, tuple[object, dict[str, int]]] = {}

    def graph(self):
        return self._graph

    def _interpreter(self, buf: bytes):
        litert = require("ai_edge_litert.interpreter")
        interp = litert.Interpreter(model_content=buf, num_threads=1, experimental_preserve_all_tensors=True,
                                    experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interp.allocate_tensors()
        return interp

    def trace(self, feed: Feed, given=None) -> Feed:
        given = dict(given or {})
        interp, extra = self._cut_model(frozenset(given))
        values = {int(self._graph.inputs[n][1:]): (np.asarray(v), self.details[int(self._graph.inputs[n][1:])])
                  for n, v in feed.items()}
        values.update({extra[t]: (np.asarray(v, np.float32), self.details[int(t[1:])]) for t, v in given.items()})
        current = {d["index"]: tuple(d["shape"]) for d in interp.get_input_details()}
        if any(current.get(i) != v.shape for i, (v, _) in values.items()):  # a dynamic axis at another size
            for i, (v, _) in values.items():
                interp.resize_tensor_input(i, list(v.shape), strict=False)
            interp.allocate_tensors()
        for i, (v, d) in values.items():
            interp.set_tensor(i, _quantize(v, d))
        interp.invoke()
        out = {}
        for t in self.traced:
            i = int(t[1:])
            value = _dequantize_tensor(np.asarray(interp.get_tensor(i)), self.details[i])
            if value is not None:
                out[t] = value
        return out

    def _cut_model(self, given: frozenset):
        """The interpreter for this set of given tensors (built once per set)."""
        if given not in self._cut:
            buf = Path(self.path).read_bytes()
            extra: dict[str, int] = {}
            if given:
                buf, extra = _cut(buf, sorted(int(t[1:]) for t in given))
            self._cut[given] = (self._interpreter(buf), extra)
        return self._cut[given]


def _cut(buf: bytes, tensors: list[int]) -> tuple[bytes, dict[str, int]]:
    """`buf` with each of `tensors` duplicated as a new subgraph input that its readers read."""
    import copy

    fb = require("ai_edge_litert.schema_py_generated")
    flatbuffers = require("flatbuffers")
    model = fb.ModelT.InitFromPackedBuf(bytearray(buf), 0)
    sg = model.subgraphs[0]
    extra = {}
    for index in tensors:
        twin = copy.deepcopy(sg.tensors[index])
        twin.buffer = 0  # no data: an input
        twin.name = (twin.name or b"") + b"/given"
        sg.tensors.append(twin)
        new = len(sg.tensors) - 1
        extra[f"t{index}"] = new
        for op in sg.operators:
            if op.inputs is not None and index in list(op.inputs):
                op.inputs = [new if i == index else i for i in op.inputs]
        sg.inputs = [*list(sg.inputs), new]
    builder = flatbuffers.Builder(len(buf) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), extra


def _dequantize_tensor(value: np.ndarray, d: dict) -> np.ndarray | None:
    """A float tensor as float32, a quantized one dequantized; None for indices, masks, shapes."""
    if value.dtype.kind == "f":
        return value.astype(np.float32, copy=False)
    q = d.get("quantization_parameters") or {}
    scales, zeros = q.get("scales", ()), q.get("zero_points", ())
    if value.dtype.kind in "iu" and len(scales) == 1 and scales[0]:
        return (value.astype(np.float32) - np.float32(zeros[0])) * np.float32(scales[0])
    return None
