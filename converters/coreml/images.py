"""`--coreml-image-input`: 4-D image inputs become Core ML ImageType inputs that take 0-255 pixels.

The source takes `(pixel / 255 - mean[c]) / std[c]`. An ImageType computes `scale * pixel + bias[c]`
with one scale for every channel, so it expresses that exactly only when `std` is the same for all
channels (scale 1/(255 std), bias -mean/std). Otherwise it takes scale 1/255 and bias -mean, and the
named pass `image-input-std` (converters/coreml/passes/) multiplies by 1/std[c] inside the model.
"""

from __future__ import annotations

from bridge.base.bindings import Pixels
from bridge.base.errors import UsageError
from bridge.base.tensors import TensorSpec, image_channels


def channel_last(framework: str) -> bool:
    return framework in ("keras", "tensorflow")


def image_inputs(specs: list[TensorSpec] | tuple[TensorSpec, ...], framework: str, mean: tuple[float, ...],
                 std: tuple[float, ...]) -> dict[str, Pixels]:
    """The inputs that become ImageTypes: 4-D float, batch 1, 1 (grayscale) or 3 (RGB) channels."""
    last = channel_last(framework)
    found = {s.name: Pixels.per_channel(mean, std, image_channels(s, last)) for s in specs
             if image_channels(s, last) in (1, 3) and s.dtype.startswith("float") and s.shape[0] == 1
             and 0 not in s.dynamic}
    if not found:
        described = ", ".join(f"{s.name} {list(s.shape)} {s.dtype}" for s in specs)
        raise UsageError("--coreml-image-input: no input is a batch-1 float image with 1 or 3 channels "
                         f"(inputs: {described})")
    return found


def uniform_std(pixels: Pixels) -> bool:
    return len(set(pixels.std)) == 1


def image_type(name: str, shape, pixels: Pixels, channel_first: bool):
    """The coremltools ImageType for one input; `shape` is the source-layout shape (may hold RangeDims)."""
    import coremltools as ct

    if uniform_std(pixels):
        scale = 1.0 / (255.0 * pixels.std[0])
        bias = [-m / pixels.std[0] for m in pixels.mean]
    else:
        scale, bias = 1.0 / 255.0, [-m for m in pixels.mean]
    rgb = pixels.color_layout == "RGB"
    return ct.ImageType(name=name, shape=shape, scale=scale, bias=bias if rgb else bias[0],
                        color_layout=ct.colorlayout.RGB if rgb else ct.colorlayout.GRAYSCALE,
                        channel_first=channel_first)
