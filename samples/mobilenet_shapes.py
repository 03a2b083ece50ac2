"""A trained MobileNetV2 sample: the benchmark's architecture at width 0.5, naming shapes at 96x96.

`bridge convert samples/mobilenet_shapes.py:load ...` calls `load()`. A random MobileNetV2 (see
`benchmarks/models.py`) fails the quantized parity thresholds because random weights amplify
quantization error through seventeen blocks; these weights, trained by `train_mobilenet_shapes.py`
on the images of `shapes.py` upscaled from 64 to 96 pixels, show what a real network of this
family keeps. The weights are stored in float16 to keep the file small and cast back to float32 on
load, so the float32 model that `load()` returns is the reference every artifact is compared with.
Inputs are RGB in [0, 1], NCHW, without mean/std normalisation: the 64x64 PNGs in `calibration/`
feed it as they are, since bridge resizes calibration images to the input size (bicubic, as here).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch
from shapes import CLASSES, make_batch
from torch import nn

WEIGHTS = Path(__file__).with_name("mobilenet_shapes.pt")
BENCHMARK_MODELS = Path(__file__).resolve().parent.parent / "benchmarks" / "models.py"
WIDTH = 0.5  # torchvision's narrow MobileNetV2: 0.7M parameters with an 8-class head
SIZE = 96
EXAMPLE_SEED = 7  # as in shapes_cnn.py: a generated shape, in range, unlike torch.randn


def _benchmark_models() -> ModuleType:
    """`benchmarks/models.py` by path: `benchmarks` is a folder of scripts, not an installed package."""
    name = "bridge_benchmark_models"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCHMARK_MODELS)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def build() -> nn.Module:
    """The untrained network: MobileNetV2 at width `WIDTH` with one output per shape class."""
    return _benchmark_models().MobileNetV2(num_classes=len(CLASSES), width=WIDTH)


def upscale(images: torch.Tensor) -> torch.Tensor:
    """[n, 3, 64, 64] shapes to [n, 3, 96, 96]: bicubic like Pillow's default `resize`, which is what
    bridge applies to the 64x64 calibration PNGs, and clipped to [0, 1] as an 8-bit image would be."""
    return nn.functional.interpolate(images, size=(SIZE, SIZE), mode="bicubic", align_corners=False).clamp_(0, 1)


def example_input() -> torch.Tensor:
    images, _ = make_batch(1, EXAMPLE_SEED)
    return upscale(torch.from_numpy(images))


def load() -> tuple[nn.Module, torch.Tensor]:
    """The trained model in eval mode and one example image, float32 [1, 3, 96, 96]."""
    state = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    model = build()
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.eval(), example_input()
