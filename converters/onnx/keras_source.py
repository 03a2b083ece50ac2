"""Keras and TensorFlow sources -> hub ONNX.

Route: tf2onnx on a `tf.function` we trace ourselves, `model(inputs, training=False)` returning a
dict keyed by output name, with one named `tf.TensorSpec` per input (static except `--dynamic`
axes). Why not tf2onnx's front doors:
- `tf2onnx.convert.from_keras` converts Keras 3 models here only through
  `tensorflow.python.keras.saving.saving_utils.trace_model_call`, TensorFlow's frozen private copy
  of Keras 2. When that import goes, its fallback calls `model(*args)` (a second input lands in
  `training`) and looks output names up in a table only filled for dict outputs (KeyError for a
  list of outputs). It also feeds dict-input models a list, and cannot take a SavedModel signature.
- `tf2onnx.convert.from_function` lists every captured tensor as a graph input, and Keras 3 layers
  capture constants (Normalization's mean and variance): the hub graph would demand them as inputs.
So we freeze the concrete function with tf2onnx's loader (variables and captured constants become
Const nodes), convert only the real inputs with `process_tf_graph` (its documented graph API), and
put the outputs back in the model's order (a traced dict comes out in key-sorted order). One path
serves Keras 3, tf_keras and SavedModel signatures alike.

SavedModels: Keras 3 cannot load them, so `tf.saved_model.load` and its `serving_default`
signature, wrapped in the same kind of `tf.function` so static shapes reach tf2onnx.

Trust: `.keras` archives load in Keras safe mode; a Lambda layer (serialized Python bytecode) needs
`--trust-code`. HDF5 and SavedModel always need it: HDF5 deserialization has a history of
safe-mode bypasses, and a SavedModel graph may run any TensorFlow op, file I/O included.

Determinism: tf2onnx's optimizers run over node lists in an order that changes from run to run;
`_nodes_in_graph_order` and `_canonicalize` make the same source give the same hub bytes.

Logging: the export child (`bridge.stages`) quiets TensorFlow, Keras and tf2onnx before they
load; grappler still prints a few lines per conversion to the child's log.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from bridge.base.arrays import Feed
from bridge.base.errors import ConversionError, UsageError, one_line, require_trust
from bridge.base.lane import ExportRequest, ExportResult
from bridge.base.lazy import require
from bridge.base.sources import Format
from bridge.base.tensors import TensorSpec, Values, apply_overrides
from bridge.converters.onnx.export import OPSET, example_tuple, finish, int_range


def export_file(req: ExportRequest) -> ExportResult:
    if req.source.format is Format.SAVED_MODEL:
        return _export_saved_model(req)
    return export_model(load_keras(req), None, req)


def load_keras(req: ExportRequest):
    """Load a `.keras` or `.h5` file; uncompiled, so custom losses and metrics are not needed."""
    if req.source.format is Format.H5:
        require_trust(req.trust_code, req.source.text,
                      "an HDF5 Keras file is deserialized outside Keras safe mode's guarantees")
    keras = require("keras")
    path = str(req.source.path)
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=not req.trust_code)
    except (ValueError, TypeError, OSError) as e:  # OSError: h5py on a damaged HDF5 file
        if "safe_mode" in str(e):
            # Keras' first sentence names the layer; the rest advises safe_mode=False
            require_trust(req.trust_code, req.source.text,
                          f"Keras safe mode refused it: {_brief(e).split('. ')[0]}")
        raise UsageError(f"{req.source.text}: Keras cannot load it: {_brief(e)}") from None


def export_model(model, example, req: ExportRequest) -> ExportResult:
    """An in-memory keras.Model (Keras 3 or tf_keras), e.g. from a Python entrypoint."""
    specs = apply_overrides(_specs(model, example), req.overrides, req.dynamic)
    if not specs:
        raise UsageError(f"{req.source.text}: the model declares no inputs; return (model, example_inputs) "
                         "from the entrypoint or pass --input NAME:D0,D1,...")
    layout = input_layout(example, model, len(specs))
    names = [s.name for s in specs]
    sample = call_model(model, layout, names, [np.zeros(s.shape, s.dtype) for s in specs])
    output_names = _output_names(model, sample)
    order = _output_order(sample, output_names)

    def call(*tensors):
        return order(call_model(model, layout, names, tensors))

    proto = _to_onnx(call, specs, output_names, name=getattr(model, "name", "keras"))

    def run(feed: Feed) -> Feed:
        out = order(call_model(model, layout, names, [feed[n] for n in names]))
        return {k: np.asarray(v) for k, v in out.items()}

    return finish(proto, req, framework="keras", inputs=specs, run_source=run, route=("keras", "tf2onnx"))


def _export_saved_model(req: ExportRequest) -> ExportResult:
    require_trust(req.trust_code, req.source.text,
                  "a SavedModel graph may run any TensorFlow op, file and network I/O included")
    tf = require("tensorflow")
    loaded = tf.saved_model.load(str(req.source.path))
    signature = loaded.signatures.get("serving_default")
    if signature is None:
        raise UsageError(f"{req.source.text}: no serving_default signature (it has: "
                         f"{', '.join(loaded.signatures) or 'none'}); re-export it with one")
    _, kwargs = signature.structured_input_signature
    specs = [TensorSpec(name, _dims(ts.shape), ts.dtype.name) for name, ts in kwargs.items()]
    specs = apply_overrides(specs, req.overrides, req.dynamic)
    names = [s.name for s in specs]
    output_names = list(signature.structured_outputs)

    def call(*tensors):
        out = signature(**dict(zip(names, tensors, strict=True)))
        return {k: out[k] for k in output_names}

    proto = _to_onnx(call, specs, output_names, name=req.source.name)

    def run(feed: Feed) -> Feed:
        _ = loaded  # the signature reads variables `loaded` owns; keep it alive
        out = signature(**{n: tf.constant(feed[n]) for n in names})
        return {k: out[k].numpy() for k in output_names}

    return finish(proto, req, framework="tensorflow", inputs=specs, run_source=run,
                  route=("tensorflow", "tf2onnx"))


def _specs(model, example) -> list[TensorSpec]:
    """Input specs from the example when there is one, else from the model's declared inputs."""
    if example is not None:
        names = _input_names(model, example)
        arrays = [np.asarray(a) for a in example_tuple(example)]
        return [TensorSpec(n, a.shape, str(a.dtype), int_range=int_range(a), values=Values.of([a]))
                for n, a in zip(names, arrays, strict=True)]
    inputs = _declared_inputs(model)
    tf = require("tensorflow")
    return [TensorSpec(_tensor_name(t), _dims(t.shape), tf.as_dtype(t.dtype).name) for t in inputs]


def _declared_inputs(model) -> list:
    """A functional model's symbolic inputs; a subclassed one declares none (`--input` names them)."""
    try:
        return list(model.inputs or [])
    except AttributeError:
        return []


def _input_names(model, example) -> list[str]:
    if isinstance(example, dict):
        return list(example)
    count = len(example_tuple(example))
    declared = [_tensor_name(t) for t in _declared_inputs(model)]
    if len(declared) == count:
        return declared
    return ["input"] if count == 1 else [f"input_{i}" for i in range(count)]


def _tensor_name(t) -> str:
    return t.name.split(":")[0]


def _dims(shape) -> tuple[int, ...]:
    """A batch axis of unknown size becomes 1; other unknown sizes must come from `--input`."""
    if getattr(shape, "rank", 0) is None:
        return (-1,)  # unknown rank: apply_overrides asks for --input, which brings the real rank
    dims = [d if d is not None else -1 for d in tuple(shape)]
    if dims and dims[0] == -1:
        dims[0] = 1
    return tuple(dims)


def input_layout(example, model, count: int) -> str:
    """How the model takes its inputs: one tensor, a list, or a dict by input name.

    The example's own structure wins (a subclassed model's `call` expects exactly it). Without
    one, a functional model takes a dict keyed by input name whatever structure it was built with.
    """
    if isinstance(example, dict):
        return "dict"
    if isinstance(example, (tuple, list)) and len(example) != 1:
        return "list"
    if count == 1:
        return "single"
    return "dict" if _declared_inputs(model) else "list"


def call_model(model, layout: str, names: Sequence[str], tensors: Sequence):
    if layout == "single":
        args = tensors[0]
    elif layout == "dict":
        args = dict(zip(names, tensors, strict=True))
    else:
        args = list(tensors)
    return model(args, training=False)


def flatten(out) -> list:
    if isinstance(out, dict):
        return [a for v in out.values() for a in flatten(v)]
    if isinstance(out, (tuple, list)):
        return [a for v in out for a in flatten(v)]
    return [out]


def _output_names(model, sample) -> list[str]:
    """Dict keys when the model returns a dict, else Keras' output names, else output_<i>."""
    if isinstance(sample, dict) and all(not isinstance(v, (dict, list, tuple)) for v in sample.values()):
        return list(sample)
    count = len(flatten(sample))
    declared = list(getattr(model, "output_names", None) or [])
    if len(declared) != count:
        return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]
    seen: set[str] = set()
    names = []
    for name in declared:  # Keras can repeat a name when one layer gives several outputs
        unique, i = name, 1
        while unique in seen:
            unique, i = f"{name}_{i}", i + 1
        seen.add(unique)
        names.append(unique)
    return names


def _output_order(sample, output_names: list[str]) -> Callable:
    """A function mapping the model's raw outputs to {output name: tensor} in model order."""
    if isinstance(sample, dict) and list(sample) == output_names:
        return lambda out: {k: out[k] for k in output_names}
    return lambda out: dict(zip(output_names, flatten(out), strict=True))


def _to_onnx(call: Callable, specs: list[TensorSpec], output_names: list[str], *, name: str):
    """Trace `call` (tensors in spec order -> {output name: tensor}) and convert it with tf2onnx."""
    tf = require("tensorflow")
    signature = [tf.TensorSpec([None if a in s.dynamic else d for a, d in enumerate(s.shape)],
                               tf.as_dtype(s.dtype), name=s.name) for s in specs]
    try:
        concrete = tf.function(call, input_signature=signature).get_concrete_function()
    except Exception as e:  # noqa: BLE001 - tracing raises whatever the model's layers raise
        raise ConversionError(f"tracing the model failed: {_brief(e)}", stage="export") from None
    try:
        proto = _convert(concrete, specs, name)
    except Exception as e:  # noqa: BLE001 - tf2onnx handlers raise many types; the message names the op
        raise ConversionError(f"tf2onnx failed: {_brief(e)}", stage="export") from None
    _order_outputs(proto, output_names)
    _canonicalize(proto.graph)  # before the check, so its error names the same node every run
    _check_supported(proto)
    _name_dynamic_dims(proto, specs)
    return proto


def _convert(concrete, specs: list[TensorSpec], name: str):
    tf = require("tensorflow")
    tf2onnx = require("tf2onnx")
    from tf2onnx import optimizer, tf_loader, tfonnx

    captured = {t.name for t in concrete.graph.internal_captures}
    tf_inputs = [t.name for t in concrete.inputs if t.name not in captured and t.dtype != tf.resource]
    tf_outputs = [t.name for t in concrete.outputs if t.dtype != tf.resource]
    rename = dict(zip(tf_inputs, [s.name for s in specs], strict=True))
    rename.update({t.name: k for k, t in concrete.structured_outputs.items()})
    graph_def = tf_loader.from_function(concrete, tf_inputs, tf_outputs)
    with _nodes_in_graph_order():
        with tf.device("/cpu:0"), tf.Graph().as_default() as graph:
            tf.import_graph_def(graph_def, name="")
            onnx_graph = tfonnx.process_tf_graph(graph, opset=OPSET, input_names=tf_inputs,
                                                 output_names=tf_outputs, tensors_to_rename=rename)
        onnx_graph = optimizer.optimize_graph(onnx_graph)
    return onnx_graph.make_model(f"{name} (tf2onnx {tf2onnx.__version__})")


@contextmanager
def _nodes_in_graph_order():
    """Make tf2onnx's optimizers visit nodes in the same order on every run.

    After every optimizer, `Graph.delete_unused_nodes` rebuilds the node list from a set of the
    nodes still in use, and tf2onnx nodes hash by address: the next optimizer then walks them in an
    order that changes from run to run (PYTHONHASHSEED cannot fix it), and that order picks which of
    two duplicate nodes survives (MergeDuplicatedNodesOptimizer keeps the first) and the counter
    numbers of the constants it folds (onnx/tensorflow-onnx#2006, open). While converting, the kept
    nodes come back in the graph's own order. Only this export child runs tf2onnx, one conversion
    at a time, so patching the class for the duration is safe.
    """
    from tf2onnx.graph import Graph

    extract = Graph.extract_sub_graph_nodes

    def in_graph_order(self, *args, **kwargs):
        position = {id(node): i for i, node in enumerate(self.get_nodes())}
        return sorted(extract(self, *args, **kwargs), key=lambda node: position.get(id(node), len(position)))

    Graph.extract_sub_graph_nodes = in_graph_order
    try:
        yield
    finally:
        Graph.extract_sub_graph_nodes = extract


def _check_supported(proto) -> None:
    """tf2onnx leaves ops it cannot lower in the graph under their TensorFlow names; list them all."""
    onnx = require("onnx")
    bad = [n for n in _all_nodes(proto.graph) if not onnx.defs.has(n.op_type, n.domain or "")]
    if bad:
        ops = ", ".join(sorted({f"{n.op_type} ({n.name})" for n in bad}))
        raise ConversionError(f"tf2onnx has no ONNX lowering for: {ops}", stage="export",
                              node=bad[0].name, op_type=bad[0].op_type)


def _all_nodes(graph):
    for node in graph.node:
        yield node
        for sub in _subgraphs(node):
            yield from _all_nodes(sub)


def _subgraphs(node) -> Iterator:
    for attr in node.attribute:
        yield from [attr.g] if attr.HasField("g") else attr.graphs


def _order_outputs(proto, output_names: list[str]) -> None:
    by_name = {o.name: o for o in proto.graph.output}
    ordered = [by_name[n] for n in output_names]
    del proto.graph.output[:]
    proto.graph.output.extend(ordered)


def _canonicalize(graph) -> None:
    """Make the graph's bytes a function of its structure, so one source gives one hub file.

    tf2onnx names what it creates `<prefix>__<n>` from a process-wide counter, and with nodes in
    graph order (`_nodes_in_graph_order`) the numbers still vary: it keeps each tensor's consumers
    in a set of node names, so with Python's per-process string hashing the Transpose optimizer
    creates one node per consumer in a different order each run (a residual Add feeding a Conv);
    its final topological sort breaks ties by those names. Nodes go in depth-first order from the
    outputs, inputs in slot order, and every `__<n>` in a name is renumbered by first appearance.
    Graph inputs and outputs keep their names; other names keep their prefix (the TF op's path),
    which is what the hub's node-name map and error messages show.
    """
    _order_nodes(graph)
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    _Renumber(keep).graph(graph)


def _order_nodes(graph) -> None:
    nodes = list(graph.node)
    for node in nodes:
        for sub in _subgraphs(node):
            _order_nodes(sub)
    producer = {out: i for i, node in enumerate(nodes) for out in node.output if out}
    deps = [[producer[n] for n in _reads(node) if n in producer] for node in nodes]
    roots = [producer[o.name] for o in graph.output if o.name in producer]
    order: list[int] = []
    seen: set[int] = set()
    for root in roots + list(range(len(nodes))):  # then nodes no output needs, as they were
        if root in seen:
            continue
        seen.add(root)
        stack = [(root, iter(deps[root]))]
        while stack:  # iterative post-order: deep graphs outgrow Python's recursion limit
            i, pending = stack[-1]
            j = next((j for j in pending if j not in seen), None)
            if j is None:
                order.append(stack.pop()[0])
            else:
                seen.add(j)
                stack.append((j, iter(deps[j])))
    del graph.node[:]
    graph.node.extend(nodes[i] for i in order)


def _reads(node) -> list[str]:
    """Tensors a node reads: its inputs, then outer tensors its Loop/If bodies read."""
    names = [n for n in node.input if n]
    for sub in _subgraphs(node):
        inner = {v.name for v in sub.input} | {t.name for t in sub.initializer}
        inner |= {out for n in sub.node for out in n.output}
        read = [name for n in sub.node for name in _reads(n)] + [o.name for o in sub.output]
        names += [n for n in read if n not in inner]
    return names


class _Renumber:
    """Renumbers `__<n>` in names in the order they are met; one new name per old name."""

    _COUNTER = re.compile(r"__(\d+)")

    def __init__(self, keep: set[str]):
        self.keep = keep
        self.numbers: dict[str, str] = {}
        self.tensors: dict[str, str] = {}
        self.nodes: dict[str, str] = {}
        self.taken = set(keep)  # the renumbering is one-to-one; only a kept name can collide

    def graph(self, graph) -> None:
        for v in graph.input:
            v.name = self.tensor(v.name)
        for node in graph.node:
            node.name = self.node(node.name)
            node.input[:] = [self.tensor(n) for n in node.input]
            for sub in _subgraphs(node):
                self.graph(sub)
            node.output[:] = [self.tensor(n) for n in node.output]
        for v in [*graph.output, *graph.initializer, *graph.value_info]:
            v.name = self.tensor(v.name)
        rank = {new: i for i, new in enumerate(self.tensors.values())}
        graph.initializer.sort(key=lambda t: (rank.get(t.name, len(rank)), t.name))
        graph.value_info.sort(key=lambda v: (rank.get(v.name, len(rank)), v.name))
        for v in [*graph.input, *graph.output, *graph.value_info]:
            for dim in v.type.tensor_type.shape.dim:
                if dim.dim_param:  # tf2onnx names unknown sizes `unk__<n>` from the same counter
                    dim.dim_param = self._sub(dim.dim_param)

    def tensor(self, name: str) -> str:
        if not name or name in self.keep:
            return name
        if name not in self.tensors:
            new = self._sub(name)
            while new in self.taken:
                new += "_"
            self.taken.add(new)
            self.tensors[name] = new
        return self.tensors[name]

    def node(self, name: str) -> str:
        if name not in self.nodes:
            self.nodes[name] = self._sub(name)
        return self.nodes[name]

    def _sub(self, name: str) -> str:
        return self._COUNTER.sub(lambda m: "__" + self.numbers.setdefault(m[1], str(len(self.numbers) + 1)), name)


def _name_dynamic_dims(proto, specs: list[TensorSpec]) -> None:
    """tf2onnx names unknown sizes `unk__N`; name them `<input>_<axis>` as the torch exporter does."""
    by_name = {s.name: s for s in specs}
    for inp in proto.graph.input:
        spec = by_name.get(inp.name)
        for axis in spec.dynamic if spec else ():
            inp.type.tensor_type.shape.dim[axis].dim_param = f"{inp.name}_{axis}"


def _brief(e: BaseException) -> str:
    """AutoGraph puts the traced stack first ("in user code:"), the error last."""
    return one_line(e, pick="last" if str(e).lstrip().startswith("in user code:") else "first")
