"""Benchmark models, written out here so the benchmark needs neither torchvision nor downloads.

`mobilenet_v2` follows the MobileNetV2 paper (Sandler et al. 2018, table 2) at width 1.0:
3.5M parameters, 1000 classes, the same layer table as torchvision's `mobilenet_v2()`. The weights
are random but seeded, which is enough to measure conversion time and memory (parity of random
weights is still checked, it is just not a statement about accuracy). `MobileNetV2(width=...)` is
the paper's width multiplier; `samples/mobilenet_shapes.py` trains a narrow one for quantized parity.
"""

from __future__ import annotations

import torch
from torch import nn

SEED = 0
INPUT_SIZE = 96

# t (expansion), c (output channels), n (repeats), s (stride of the first repeat)
MOBILENET_V2_TABLE = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def make_divisible(channels: float, divisor: int = 8) -> int:
    """torchvision's rounding of scaled channel counts: to the nearest multiple of `divisor`, but
    never more than 10% below the scaled count."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * channels else rounded


def conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1,
            relu6: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if relu6:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """1x1 expansion, 3x3 depthwise, linear 1x1 projection; a skip when shape allows."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        layers = [conv_bn(cin, hidden, kernel=1)] if expansion != 1 else []
        layers += [
            conv_bn(hidden, hidden, stride=stride, groups=hidden),
            conv_bn(hidden, cout, kernel=1, relu6=False),
        ]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class MobileNetV2(nn.Module):
    """`width` scales the stem and every block's channels (rounded by `make_divisible`) but not
    `last`, as torchvision does for widths up to 1.0."""

    def __init__(self, num_classes: int = 1000, stem: int = 32, last: int = 1280, width: float = 1.0) -> None:
        super().__init__()
        stem = make_divisible(stem * width)
        layers: list[nn.Module] = [conv_bn(3, stem, stride=2)]
        cin = stem
        for t, c, n, s in MOBILENET_V2_TABLE:
            c = make_divisible(c * width)
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(conv_bn(cin, last, kernel=1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def _init(model: nn.Module, generator: torch.Generator) -> None:
    """torchvision's initialisation, drawn from `generator` so the global RNG is left alone."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", generator=generator)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01, generator=generator)
            nn.init.zeros_(m.bias)


@torch.no_grad()
def _settle_batch_norm(model: nn.Module, batch: torch.Tensor) -> None:
    """Set BatchNorm statistics from one batch, as training would.

    With identity statistics a random MobileNetV2 shrinks its activations at every depthwise layer
    (fan-out init gives 3x3 depthwise kernels tiny weights) and ends with logits near 1e-10, a
    degenerate thing to compare. Real statistics keep every layer near unit scale, like a trained
    network.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: after one batch, exactly that batch's statistics
    model.train()
    model(batch)
    for m in norms:
        m.momentum = 0.1


def mobilenet_v2() -> tuple[nn.Module, torch.Tensor]:
    """MobileNetV2 (width 1.0, 1000 classes) with seeded random weights and a 96x96 example."""
    generator = torch.Generator().manual_seed(SEED)
    model = MobileNetV2()
    _init(model, generator)
    _settle_batch_norm(model, torch.randn(8, 3, INPUT_SIZE, INPUT_SIZE, generator=generator))
    example = torch.randn(1, 3, INPUT_SIZE, INPUT_SIZE, generator=generator)
    return model.eval(), example


class Bottleneck(nn.Module):
    """ResNet's bottleneck block (He et al. 2016): 1x1 reduce, 3x3 (strided), 1x1 expand, residual."""

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * 4
        self.body = nn.Sequential(conv_bn(cin, width, 1, relu6=False), nn.ReLU(),
                                  conv_bn(width, width, 3, stride, relu6=False), nn.ReLU(),
                                  conv_bn(width, cout, 1, relu6=False))
        self.shortcut = conv_bn(cin, cout, 1, stride, relu6=False) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNet50(nn.Module):
    """ResNet-50 (25.6M parameters, 1000 classes), torchvision's layer table."""

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn(3, 64, 7, 2, relu6=False), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
        cin = 64
        for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            for i in range(blocks):
                layers.append(Bottleneck(cin, width, stride if i == 0 else 1))
                cin = width * 4
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


RESNET_INPUT_SIZE = 224


def resnet50() -> tuple[nn.Module, torch.Tensor]:
    """ResNet-50 with seeded random weights (BatchNorm settled on one batch) and a 224x224 example."""
    generator = torch.Generator().manual_seed(SEED)
    model = ResNet50()
    _init(model, generator)
    _settle_batch_norm(model, torch.randn(4, 3, RESNET_INPUT_SIZE, RESNET_INPUT_SIZE, generator=generator))
    example = torch.randn(1, 3, RESNET_INPUT_SIZE, RESNET_INPUT_SIZE, generator=generator)
    return model.eval(), example
