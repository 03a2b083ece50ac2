"""What op converters read and write while a graph is lowered to MIL.

ONNX tensors map to MIL Vars, or to numpy arrays when their value is known at conversion time
(initializers, Constant nodes, and anything computed only from those: shape arithmetic folds to
numpy so MIL sees constants, never Shape/Gather chains).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from bridge.base.errors import ConversionError


def attrs(node) -> dict[str, Any]:
    from onnx import helper

    out = {}
    for a in node.attribute:
        value = helper.get_attribute_value(a)
        out[a.name] = value.decode() if isinstance(value, bytes) else value
    return out


class Context:
    def __init__(self, opset: int, constants: dict[str, np.ndarray], node_names: dict[str, str] | None = None):
        self.opset = opset
        self.values: dict[str, Any] = dict(constants)
        self.node_names = node_names or {}
        self._used: set[str] = set()

    # reading -------------------------------------------------------------------------------
    def has(self, name: str) -> bool:
        return bool(name) and name in self.values

    def value(self, name: str):
        """The Var or numpy array for an ONNX tensor name."""
        if name not in self.values:
            raise ConversionError(f"tensor {name} is read before it is produced", stage="coreml-convert")
        return self.values[name]

    def const(self, name: str) -> np.ndarray | None:
        """The tensor's value when known at conversion time, else None."""
        if not name:
            return None
        v = self.values.get(name)
        if isinstance(v, np.ndarray):
            return v
        val = getattr(v, "val", None)  # MIL Vars whose value MIL already inferred
        return np.asarray(val) if val is not None else None

    def var(self, name: str):
        """The tensor as something MIL ops accept: a Var, or a numpy constant MIL embeds (64-bit
        constants narrowed: Core ML computes in int32 and fp32 at most)."""
        v = self.value(name)
        if isinstance(v, np.ndarray):
            if v.dtype.kind in "iu" and v.dtype != np.int32:  # saturated: INT64_MAX means "to the end", not -1
                return np.clip(v, np.iinfo(np.int32).min, np.iinfo(np.int32).max).astype(np.int32)
            if v.dtype == np.float64:
                return v.astype(np.float32)
        return v

    def optional(self, node, index: int):
        """The node's input `index` when present and non-empty, else None."""
        if len(node.input) > index and node.input[index]:
            return self.value(node.input[index])
        return None

    # writing -------------------------------------------------------------------------------
    def set(self, name: str, value) -> None:
        self.values[name] = value

    def name(self, node, index: int = 0) -> str:
        """A unique MIL name for the node's output `index` (graph outputs keep their ONNX name)."""
        base = re.sub(r"[^A-Za-z0-9_]", "_", node.output[index] or f"{node.name}_{index}")
        name, i = base, 1
        while name in self._used:
            name, i = f"{base}_{i}", i + 1
        self._used.add(name)
        return name

    def unsupported(self, node, why: str) -> ConversionError:
        original = self.node_names.get(node.name, node.name)
        return ConversionError(f"{node.op_type} node {original}: {why}", stage="coreml-convert",
                               node=original, op_type=node.op_type)
