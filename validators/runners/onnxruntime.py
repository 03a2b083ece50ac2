"""ONNX artifacts and sources on onnxruntime's CPU provider."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from bridge.base.arrays import Feed
from bridge.base.lazy import require
from bridge.base.onnx_files import session_source


class OnnxRuntimeRunner:
    runtime = "onnxruntime"

    def load(self, path: str) -> None:
        ort = require("onnxruntime")
        opts = ort.SessionOptions()
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
