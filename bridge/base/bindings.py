"""How a source's tensors appear inside an artifact: names, layouts, quantization, pixel units."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy loads where arrays are touched: a warm run reads none (~50 ms)
    import numpy as np

from bridge.base.errors import UsageError
from bridge.base.tensors import TensorSpec, dtype_name

# Where a Core ML package made with --coreml-image-input keeps its pixel normalization (user-defined
# metadata: {feature name: Pixels.to_json()}): written by the lane, read by `bridge validate`.
PIXELS_METADATA_KEY = "bridge.pixels"


@dataclass(frozen=True)
class Pixels:
    """An artifact input that takes raw 0-255 pixels where the source takes `(pixels / 255 - mean) / std`
    per channel (`--coreml-image-input`). `mean` and `std` have one value per channel."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    color_layout: str  # RGB | GRAYSCALE

    @staticmethod
    def per_channel(mean: tuple[float, ...], std: tuple[float, ...], channels: int) -> Pixels:
        """Broadcast `--mean`/`--std` (one value, or one per channel; empty: 0 and 1) to `channels`."""
        def fit(values: tuple[float, ...], default: float, flag: str) -> tuple[float, ...]:
            values = values or (default,)
            if len(values) not in (1, channels):
                raise UsageError(f"{flag} has {len(values)} values; the image input has {channels} channel(s)")
            return tuple(float(v) for v in (values * channels if len(values) == 1 else values))

        return Pixels(fit(mean, 0.0, "--mean"), fit(std, 1.0, "--std"), "RGB" if channels == 3 else "GRAYSCALE")

    def to_pixels(self, x: np.ndarray, axis: int) -> np.ndarray:
        import numpy as np
        shape = [1] * x.ndim
        shape[axis] = len(self.mean)
        mean = np.asarray(self.mean, np.float32).reshape(shape)
        std = np.asarray(self.std, np.float32).reshape(shape)
        return ((x * std + mean) * np.float32(255.0)).astype(np.float32)

    def to_json(self) -> dict:
        return {"scale": 1 / 255, "mean": list(self.mean), "std": list(self.std), "color_layout": self.color_layout}


@dataclass(frozen=True)
class Binding:
    """How one source tensor appears inside an artifact.

    `perm` maps the source layout to the artifact's: `artifact = source.transpose(perm)`.
    `quant` is `(scale, zero_point)` when the artifact's tensor is integer-quantized.
    `pixels`: the artifact takes 0-255 pixels (channel axis 1, after `perm`) for this normalized input.
    """

    name: str  # the source's (and the ONNX hub's) name
    artifact_name: str
    shape: tuple[int, ...]
    dtype: str
    perm: tuple[int, ...] | None = None
    layout: str = "source"
    quant: tuple[float, int] | None = None
    pixels: Pixels | None = None

    def to_json(self) -> dict:
        out = {"name": self.name, "artifact_name": self.artifact_name, "shape": list(self.shape),
               "dtype": dtype_name(self.dtype), "layout": self.layout,
               "permutation": list(self.perm) if self.perm else None}
        if self.quant:
            out["quantization"] = {"scale": self.quant[0], "zero_point": self.quant[1]}
        if self.pixels:
            out["pixels"] = self.pixels.to_json()
        return out

    def to_artifact(self, x: np.ndarray) -> np.ndarray:
        import numpy as np
        if x.ndim == 0 and tuple(self.shape) == (1,):  # a scalar the artifact holds as [1] (TFLite has no rank 0)
            return x.reshape(1)
        x = np.ascontiguousarray(x.transpose(self.perm)) if self.perm else x
        return self.pixels.to_pixels(x, axis=1) if self.pixels else x

    def to_source(self, x: np.ndarray) -> np.ndarray:
        import numpy as np
        return np.ascontiguousarray(x.transpose(np.argsort(self.perm))) if self.perm else x


@dataclass(frozen=True)
class IO:
    inputs: tuple[Binding, ...]
    outputs: tuple[Binding, ...]

    def to_json(self) -> dict:
        return {"inputs": [b.to_json() for b in self.inputs], "outputs": [b.to_json() for b in self.outputs]}

    @staticmethod
    def identity(inputs: list[TensorSpec], outputs: list[TensorSpec]) -> IO:
        def bind(s: TensorSpec) -> Binding:
            return Binding(s.name, s.name, s.shape, s.dtype)
        return IO(tuple(bind(s) for s in inputs), tuple(bind(s) for s in outputs))
