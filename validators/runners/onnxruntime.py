"""ONNX artifacts and sources on onnxruntime's CPU provider."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from bridge.base.arrays import Feed
from bridge.base.cpus import onnxruntime_options
from bridge.base.inference import infer
from bridge.base.lazy import require
from bridge.base.onnx_files import session_source


class OnnxRuntimeRunner:
    runtime = "onnxruntime"

    def load(self, path: str) -> None:
        ort = require("onnxruntime")
        opts = onnxruntime_options(ort)
        opts.log_severity_level = 3
        # Parity wants the graph as written: no fusions that would hide what the file computes
        # differently from what the converters see.
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        # The file may be anyone's: onnxruntime gets it only once every tensor is checked, and its
        # external bytes (if any) read by us (`bridge.base.onnx_files`).
        with tempfile.TemporaryDirectory(prefix="bridge-ort-") as scratch:  # only for models over 2 GB
            source = session_source(Path(path), Path(scratch))
            self.session = ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
        self.output_names = [o.name for o in self.session.get_outputs()]

    def infer(self, feed: Feed) -> Feed:
        outs = self.session.run(self.output_names, feed)
        return {n: np.asarray(o) for n, o in zip(self.output_names, outs, strict=True)}


class OnnxRuntimeTracer:
    """Every node output of an ONNX file, for per-layer localisation (the hub, and ONNX artifacts):
    each float tensor a top-level node computes becomes a graph output. Graph optimizations are
    off, so no fusion hides a node; a model with external data (over 2 GB) is handed over as
    `session_source` hands it, with the outputs added before any weight is read."""

    runtime = "onnxruntime"
    note = "onnxruntime with every node output exposed and graph optimizations off (parity runs basic ones)"

    def load(self, path: str) -> None:
        from bridge.base.onnx_files import read_graph
        from bridge.validators.localisation.graph import COPY_OPS, TracedGraph, TracedOp

        self.path = Path(path)
        model = read_graph(self.path)
        inferred = infer(model)
        self.types = {vi.name: vi.type.tensor_type.elem_type
                      for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
        ops, seen = [], set()
        for i, node in enumerate(model.graph.node):
            name = node.name or (node.output[0] if node.output else f"{node.op_type}_{i}")
            while name in seen:
                name = f"{name}_{i}"
            seen.add(name)
            ops.append(TracedOp(name, node.op_type, tuple(node.input), tuple(o for o in node.output if o),
                                copies=node.op_type in COPY_OPS))
        inits = {t.name for t in model.graph.initializer}
        self._graph = TracedGraph(tuple(ops), {i.name: i.name for i in model.graph.input if i.name not in inits},
                                  {o.name: o.name for o in model.graph.output})
        self.traced = [o for op in ops for o in op.outputs if self.types.get(o) in _FLOAT_TYPES]
        self._sessions: dict[frozenset, tuple[object, list[str]]] = {}

    def graph(self):
        return self._graph

    def keep_only(self, tensors) -> None:
        """Trace only these (a cap on what a very large graph exposes at once)."""
        wanted = set(tensors)
        self.traced = [t for t in self.traced if t in wanted]

    def trace(self, feed: Feed, given=None) -> Feed:
        given = dict(given or {})
        session, names = self._session(frozenset(given))
        run_feed = dict(feed)
        for name, value in given.items():
            run_feed[_given(name)] = np.asarray(value).astype(_NUMPY[self.types[name]], copy=False)
        outs = session.run(names, run_feed)
        return {n: np.asarray(o, dtype=np.float32) for n, o in zip(names, outs, strict=True)
                if np.asarray(o).dtype.kind == "f"}

    def _session(self, given: frozenset):
        if given not in self._sessions:
            self._sessions[given] = self._build(given)
        return self._sessions[given]

    def perturbed(self, tensors):
        """`run(feed, deltas) -> outputs`: the graph's outputs when the readers of each tensor named
        in `tensors` read it plus its delta (zeros where none is given). One session serves every
        tensor: what an error in one tensor alone does to the outputs through this (float) graph."""
        onnx = require("onnx")
        tensors = [t for t in tensors if t in self.types]
        types = self.types

        def edit(model) -> None:
            graph = model.graph
            wanted = set(tensors)
            readers = [n for n in graph.node]
            for node in readers:
                node.input[:] = [_perturbed(n) if n in wanted else n for n in node.input]
            nodes = []
            for node in readers:
                nodes.append(node)
                nodes += [onnx.helper.make_node("Add", [o, _delta(o)], [_perturbed(o)], name=_perturbed(o))
                          for o in node.output if o in wanted]
            del graph.node[:]
            graph.node.extend(nodes)
            for name in tensors:
                graph.input.append(onnx.helper.make_tensor_value_info(_delta(name), types[name], None))

        ort = require("onnxruntime")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        with tempfile.TemporaryDirectory(prefix="bridge-ort-") as scratch:
            session = ort.InferenceSession(session_source(self.path, Path(scratch), edit=edit), opts,
                                           providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]

        def run(feed: Feed, deltas: dict[str, np.ndarray]) -> Feed:
            run_feed = dict(feed)
            for t, d in deltas.items():
                run_feed[_delta(t)] = np.asarray(d).astype(_NUMPY[types[t]], copy=False)
            outs = session.run(names, run_feed)
            return {n: np.asarray(o, dtype=np.float32) for n, o in zip(names, outs, strict=True)}

        return tensors, run

    def _build(self, given: frozenset):
        ort = require("onnxruntime")
        onnx = require("onnx")
        exposed, types = self.traced, self.types

        def edit(model) -> None:
            graph = model.graph
            existing = {o.name for o in graph.output}
            for name in exposed:
                if name not in existing:
                    graph.output.append(onnx.helper.make_tensor_value_info(name, types[name], None))
            for name in sorted(given):
                graph.input.append(onnx.helper.make_tensor_value_info(_given(name), types[name], None))
            for node in graph.node:
                node.input[:] = [_given(n) if n in given else n for n in node.input]

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        with tempfile.TemporaryDirectory(prefix="bridge-ort-") as scratch:
            source = session_source(self.path, Path(scratch), edit=edit)
            session = ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
        return session, [o.name for o in session.get_outputs()]


_FLOAT_TYPES = (1, 10, 11, 16)  # FLOAT, FLOAT16, DOUBLE, BFLOAT16
_NUMPY = {1: np.float32, 10: np.float16, 11: np.float64, 16: np.float32}


def _given(name: str) -> str:
    return f"{name}__bridge_given"


def _delta(name: str) -> str:
    return f"{name}__bridge_delta"


def _perturbed(name: str) -> str:
    return f"{name}__bridge_perturbed"
