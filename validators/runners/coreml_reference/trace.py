"""Every value the reference executor computes, for per-layer localisation of Core ML artifacts.

Our ONNX->MIL converter names each MIL op after the ONNX tensor it computes (sanitized; coremltools'
fp16 pass appends `_cast_fp16`), so these values map back to the hub's nodes by name first.
"""

from __future__ import annotations

import numpy as np

from bridge.base.arrays import Feed

from .executor import Executor, _compute_value
from .loader import load_package


class ReferenceTracer:
    runtime = "coreml-reference"
    note = "the Core ML reference executor's value of every MIL op"

    def load(self, path: str) -> None:
        from bridge.validators.localisation.graph import COPY_OPS, TracedGraph, TracedOp

        self.package = load_package(path)
        self.executor = Executor(self.package.program, self.package.function)
        ops = []
        for step in self.executor.plan:
            inputs = tuple(n for _, src in step.args for n in ((src,) if isinstance(src, str) else src))
            ops.append(TracedOp(step.op.name, step.op.op_type, inputs, tuple(v for v, _, _ in step.outputs),
                                copies=step.op.op_type in COPY_OPS))
        self._graph = TracedGraph(tuple(ops), {n: n for n in self.package.input_names},
                                  {n: n for n in self.package.output_names})

    def graph(self):
        return self._graph

    def trace(self, feed: Feed, given=None) -> Feed:
        given = given or {}
        ex = self.executor
        env = dict(ex.constants)
        for name, var in ex.inputs.items():
            env[name] = _compute_value(ex._feed_value(name, var, feed))  # noqa: SLF001 - the executor's own checks
        out = {}
        with np.errstate(all="ignore"):
            for step in ex.plan:
                step.run(env)
                for var, finish, _ in step.outputs:
                    value = np.asarray(env[var])
                    if value.dtype.kind == "f":
                        out[var] = value.astype(np.float32, copy=False)
                    if var in given:  # readers get the reference's value, rounded as the file declares
                        env[var] = finish(np.asarray(given[var], np.float32))
        return out
