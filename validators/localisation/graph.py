"""What a tracer reports about a graph it ran: its ops in execution order and the tensors they read
and write. Framework-free: the hub (ONNX on onnxruntime) and every artifact (TFLite, Core ML,
ONNX) describe themselves in these terms, and the aligner only ever sees these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from bridge.base.arrays import Feed


@dataclass(frozen=True)
class TracedOp:
    """One op. `inputs` and `outputs` are tensor ids (unique within the graph; constants appear in
    `inputs` too and are never traced). `copies`: the op only moves or re-encodes values
    (transpose, reshape, quantize, cast...), so its output holds the same tensor as its input."""

    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    copies: bool = False


@dataclass(frozen=True)
class TracedGraph:
    ops: tuple[TracedOp, ...]  # in execution (topological) order
    inputs: Mapping[str, str]  # interface name (a binding's artifact_name) -> tensor id
    outputs: Mapping[str, str]
    names: Mapping[str, str] = field(default_factory=dict)  # tensor id -> display name, where they differ

    def name(self, tensor: str) -> str:
        return self.names.get(tensor, tensor)


class Tracer(Protocol):
    """Runs an artifact keeping every intermediate tensor, for per-layer localisation.

    `runtime` names what ran; `note` says how that differs from the parity run (other kernels, no
    delegate), for the report. `trace` takes a feed by interface name, in the artifact's layout and
    units, and returns every float tensor it computed by id, as float32 in the artifact's layout
    (quantized ones dequantized with their own scale and zero point; indices, masks and shapes are
    left out). With `given`, each op reading a tensor
    named there reads the given value instead (float, artifact layout; quantized again where the
    tensor is), while the tensor itself still holds what its own op computed: one run then gives
    every layer's output from exact inputs (the isolated profile)."""

    runtime: str
    note: str

    def load(self, path: str) -> None: ...

    def graph(self) -> TracedGraph: ...

    def trace(self, feed: Feed, given: Mapping[str, np.ndarray] | None = None) -> Feed: ...


# Op types that move or re-encode values without computing, across the runtimes we trace: the
# output holds the input's values in another shape, layout or encoding.
COPY_OPS = frozenset({
    # ONNX
    "Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Cast", "QuantizeLinear",
    "DequantizeLinear",
    # TFLite
    "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "TRANSPOSE", "CAST", "QUANTIZE", "DEQUANTIZE",
    # MIL
    "identity", "reshape", "squeeze", "expand_dims", "transpose", "cast", "quantize", "dequantize", "flatten2d",
})


# ONNX ops a converter folds into the op before them (bias, batch norm, activation): a divergent
# artifact tensor may hold the result of a chain of these, which then names the fused group.
FUSIBLE_OPS = frozenset({
    "Add", "Sub", "Mul", "Div", "BatchNormalization", "Relu", "Clip", "LeakyRelu", "PRelu", "Sigmoid",
    "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu", "Softplus", "Mish", "Gelu", "Identity", "Cast",
})
