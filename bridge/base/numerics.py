"""What the hub's numbers span, as data: tensors beyond float16's range, constants it cannot hold.

Measured by the hub (`bridge.converters.onnx.ranges`), turned into warnings by the orchestrator.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FP16_MAX = 65504.0  # the largest finite float16; anything larger rounds to Inf
FP16_ZERO = 2.0**-25  # half float16's smallest subnormal (2**-24): nonzero values up to here round to 0


@dataclass(frozen=True)
class Overflow:
    """A float tensor of the hub whose magnitude exceeds what float16 holds."""

    tensor: str
    node: str  # the node that computes it, by its name in the source (or "input")
    max_abs: float

    def __str__(self) -> str:
        where = f"input {self.tensor}" if self.node == "input" else f"{self.node} (tensor {self.tensor})"
        return f"{where}: max |x| {self.max_abs:.4g}"


@dataclass(frozen=True)
class Constant:
    """A float constant of the hub (an initializer or a Constant node's value, in the graph or a
    subgraph) that float16 cannot hold: beyond +-65504, or a single value it rounds to zero."""

    tensor: str
    node: str | None  # the Constant node, by its name in the source; None for an initializer
    max_abs: float  # over the finite values: +-Inf stays Inf in float16
    size: int
    graph: str | None = None  # the node whose subgraph holds it; None for the main graph

    @property
    def overflows(self) -> bool:
        return self.max_abs > FP16_MAX

    @property
    def vanishes(self) -> bool:
        """A single nonzero value float16 rounds to zero: nearly always an epsilon (F.normalize's
        and BERT's LayerNorm's 1e-12) guarding a division or a square root, which then no longer
        guards it. Tensors of such values are left out: measured on a torchvision MobileNetV2
        export, 17 BatchNorm-folded Conv biases are all noise near 1e-8, and losing an addend that
        small changes no float16 sum it joins."""
        return self.size == 1 and 0.0 < self.max_abs <= FP16_ZERO

    def __str__(self) -> str:
        where = f"initializer {self.tensor}" if self.node is None else f"{self.node} (tensor {self.tensor})"
        return f"{where} in {self.graph}" if self.graph else where


@dataclass(frozen=True)
class Ranges:
    """The hub's activation ranges, measured once per run by the `activation-ranges` stage."""

    calibration: dict[str, tuple[float, float]] = field(default_factory=dict)  # for lanes that quantize with them
    fp16: tuple[Overflow | Constant, ...] = ()  # what float16 cannot hold (parity + calibration samples)
