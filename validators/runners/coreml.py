"""Core ML artifacts: Core ML itself on macOS, our reference executor everywhere else.

The report says which ran (`runtime`: "coreml" or "coreml-reference"). The executor reads the saved
package (spec and weight.bin), so it checks exactly the file that ships; an op it lacks makes
parity `not_executed`, never a silent pass.
"""

from __future__ import annotations

import json
import platform

import numpy as np

from bridge.base.arrays import Feed
from bridge.base.bindings import PIXELS_METADATA_KEY
from bridge.base.lazy import require


class CoreMLRunner:
    runtime = "coreml"

    def load(self, path: str) -> None:
        self._reference = None
        if platform.system() != "Darwin":
            from bridge.validators.runners.coreml_reference import ReferenceRunner

            self._reference = ReferenceRunner()
            self._reference.load(path)  # raises RuntimeUnavailable naming every unsupported op
            self.runtime = ReferenceRunner.runtime
            return
        ct = require("coremltools")
        self.model = ct.models.MLModel(path)
        self._images = {i.name: i.type.imageType.colorSpace for i in self.model.get_spec().description.input
                        if i.type.WhichOneof("Type") == "imageType"}

    def infer(self, feed: Feed) -> Feed:
        if self._reference is not None:
            return self._reference.infer(feed)
        feed = {k: _image(v, self._images[k]) if k in self._images else v for k, v in feed.items()}
        return {k: np.asarray(v) for k, v in self.model.predict(feed).items()}


def _image(pixels: np.ndarray, color_space: int):
    """Core ML takes image inputs as images: (1, C, H, W) pixel values become an 8-bit PIL image
    (parity samples for image inputs are whole 0-255 values, so nothing is lost)."""
    from PIL import Image

    hwc = np.clip(np.rint(pixels[0].transpose(1, 2, 0)), 0, 255).astype(np.uint8)
    return Image.fromarray(hwc[..., 0], "L") if hwc.shape[-1] == 1 else Image.fromarray(hwc, "RGB")


def describe(path: str) -> dict:
    """The package's interface and the mode its ops reveal (for `bridge validate` and `inspect`)."""
    from bridge.validators.runners.coreml_reference.loader import load_package

    package = load_package(path)
    func = package.program.functions[package.function]
    ops: dict[str, int] = {}
    stack = [func]
    while stack:
        block = stack.pop()
        for op in block.operations:
            ops[op.op_type] = ops.get(op.op_type, 0) + 1
            stack.extend(op.blocks)

    def tensor(var) -> dict:
        from coremltools.converters.mil.mil import types

        shape = [int(d) if isinstance(d, (int, np.integer)) else -1 for d in var.shape]
        return {"name": var.name, "shape": shape, "dtype": types.builtin_to_string(var.dtype), "quantization": None}

    inputs = [tensor(func.inputs[n]) for n in package.input_names]
    pixels = json.loads(package.metadata.get(PIXELS_METADATA_KEY, "{}"))
    for t in inputs:
        if t["name"] in package.images:
            t["dtype"] = "image"
            t["pixels"] = pixels.get(t["name"])  # None: made elsewhere, units unknown
    outputs = [tensor(v) for v in func.outputs]
    return {"inputs": inputs, "outputs": outputs, "ops": dict(sorted(ops.items())), "mode": infer_mode(func, ops)}


def infer_mode(func, ops: dict[str, int]) -> str:
    """Decompression ops name the weight compression; quantize ops mean int8 activations; otherwise
    the dtype the graph computes in."""
    if "quantize" in ops:
        return "int8"
    if "constexpr_lut_to_dense" in ops:
        bits = _lut_bits(func)
        return f"palettize-{bits}" if bits in (4, 6, 8) else "palettize-4"
    if "constexpr_blockwise_shift_scale" in ops:
        return "int4-weights" if _blockwise_bits(func) == 4 else "int8-weights"
    if "constexpr_affine_dequantize" in ops:
        return "int8-weights"
    from coremltools.converters.mil.mil import types

    float16 = any(types.builtin_to_string(v.dtype) == "fp16" for op in func.operations for v in op.outputs
                  if getattr(v, "dtype", None) is not None)
    return "fp16" if float16 else "fp32"


def _lut_bits(func) -> int | None:
    for op in func.operations:
        if op.op_type == "constexpr_lut_to_dense":
            lut = op.lut.val
            return int(np.log2(lut.shape[-2] if lut.ndim > 1 else lut.shape[0]))
    return None


def _blockwise_bits(func) -> int | None:
    from coremltools.converters.mil.mil import types

    for op in func.operations:
        if op.op_type == "constexpr_blockwise_shift_scale":
            name = types.builtin_to_string(op.data.dtype)
            return 4 if name.endswith("4") else 8
    return None


class CoreMLTracer:
    """Per-layer values of a Core ML package: always the reference executor (Core ML on macOS
    exposes no intermediate values), so on macOS localisation runs other code than parity did."""

    def __init__(self):
        from bridge.validators.runners.coreml_reference.trace import ReferenceTracer

        self._tracer = ReferenceTracer()
        self.runtime = ReferenceTracer.runtime
        self.note = ReferenceTracer.note + (
            "; parity ran Core ML itself, localisation the reference executor" if platform.system() == "Darwin"
            else "")

    def load(self, path: str) -> None:
        self._tracer.load(path)

    def graph(self):
        return self._tracer.graph()

    def trace(self, feed: Feed, given=None) -> Feed:
        return self._tracer.trace(feed, given)
