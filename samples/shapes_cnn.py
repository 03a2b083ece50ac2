"""The bundled sample: a small trained CNN that names the shape in a 64x64 image.

`bridge convert samples/shapes_cnn.py:load ...` calls `load()`. The weights are trained by
`train_shapes.py` (about a minute on a laptop CPU) on images from `shapes.py`; quantized parity is
only meaningful on trained weights, since random weights make int8 error look far worse than it is.
Inputs are RGB in [0, 1], NCHW, with no mean/std normalisation, so the PNGs in `calibration/` feed
the model as they are.
"""

from __future__ import annotations

from pathlib import Path

import torch
from shapes import CLASSES, make_batch
from torch import nn

WEIGHTS = Path(__file__).with_name("shapes_cnn.pt")
EXAMPLE_SEED = 7  # the example image is a generated shape, in range, unlike torch.randn


def conv_bn_relu(cin: int, cout: int, stride: int = 1, groups: int = 1, kernel: int = 3) -> nn.Sequential:
    """ReLU6 rather than ReLU, as in MobileNet: bounded activations keep int8 ranges tight."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    )


class ShapesCNN(nn.Module):
    """Conv-BN-ReLU6 blocks, a depthwise-separable pair, max and global-average pooling, linear head."""

    def __init__(self, num_classes: int = len(CLASSES)) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_bn_relu(3, 16, stride=2),  # 32x32
            conv_bn_relu(16, 32),
            nn.MaxPool2d(2),  # 16x16
            conv_bn_relu(32, 32, stride=2, groups=32),  # depthwise, 8x8
            conv_bn_relu(32, 64, kernel=1),  # pointwise
            conv_bn_relu(64, 64),
            conv_bn_relu(64, 128, stride=2),  # 4x4
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


def example_input() -> torch.Tensor:
    images, _ = make_batch(1, EXAMPLE_SEED)
    return torch.from_numpy(images)


def load() -> tuple[nn.Module, torch.Tensor]:
    """The trained model in eval mode and one example image, float32 [1, 3, 64, 64]."""
    model = ShapesCNN()
    model.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True))
    return model.eval(), example_input()
