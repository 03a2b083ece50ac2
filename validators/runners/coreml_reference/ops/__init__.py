"""MIL op implementations for the reference executor, one small numpy function per op type.

Each function takes the op's inputs as keyword arguments (numpy arrays, Python lists for tuple
inputs such as `concat(values=...)`, plain scalars and strings for parameters) and returns the
op's output, or a tuple of outputs. A function that needs the op's declared types or shapes takes
a parameter named `mil_op` and receives the loaded MIL operation.

Precision is not handled here: the executor hands every op float32 for float16 tensors and
rounds each output to its declared dtype, so one implementation serves fp16 and fp32 programs.
An op registered with `copies_values=True` promises that every float it returns is one of its
input values (reshape, concat, max_pool's windows, clip's bounds, ...): fed only fp16 values, it
returns fp16 values, and the executor skips the rounding, which would change nothing.

Families register on import of `load_families()`, never at `import bridge`: nothing here is
needed until a Core ML artifact is validated.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable

from bridge.base.registry import Registry

FAMILIES = ("elementwise", "activation", "linear", "conv", "pool", "norm", "reduce", "tensor", "scatter_gather",
            "resize", "quantization", "constexpr")


def _load() -> None:
    for family in FAMILIES:
        importlib.import_module(f"{__name__}.{family}")


OPS = Registry("reference op", load=_load)


def op(*names: str, copies_values: bool = False) -> Callable:
    """Register `fn` as the implementation of MIL op types `names` (refuses duplicates, so two
    families can never silently disagree about one op)."""

    def register(fn: Callable) -> Callable:
        fn.wants_op = "mil_op" in inspect.signature(fn).parameters
        fn.copies_values = copies_values
        return OPS.register(*names)(fn)

    return register


def load_families() -> Registry:
    """Every family imported (once); the registry: op type -> implementation."""
    return OPS
