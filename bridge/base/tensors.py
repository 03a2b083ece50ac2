"""Tensor descriptions and the seeded sample data every runtime is fed."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy loads where arrays are touched: a warm run reads none (~50 ms)
    import numpy as np

from bridge.base.errors import UsageError

DTYPES = ("float32", "float16", "float64", "int64", "int32", "int8", "uint8", "bool")
# Core ML's MIL spells floats fp16/fp32; the report uses numpy's names for every tensor, so one
# artifact's float32 is never another's fp32 (modes keep their short names: fp16 is a mode).
_DTYPE_NAMES = {"fp16": "float16", "fp32": "float32", "fp64": "float64"}


def dtype_name(dtype: str) -> str:
    """numpy's name for a tensor dtype however a runtime spells it (`image` stays: a Core ML ImageType)."""
    return _DTYPE_NAMES.get(dtype, dtype)


@dataclass(frozen=True)
class TensorSpec:
    """Name, static shape and dtype of one model input or output.

    `dynamic` lists axes the artifacts keep dynamic (`--dynamic`); `shape` holds the size used for
    sample data. `int_range` bounds integer samples (token ids must stay inside the vocabulary);
    `values` is the distribution of a float input's example, which synthetic samples follow.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    dynamic: tuple[int, ...] = ()
    int_range: tuple[int, int] | None = None
    values: Values | None = None

    def to_json(self) -> dict:
        out = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.dynamic:
            out["dynamic_axes"] = list(self.dynamic)
        if self.values is not None:
            out["example_values"] = self.values.to_json()
        return out

    @property
    def nbytes(self) -> int:
        import numpy as np
        count = 1
        for d in self.shape:
            count *= max(int(d), 1)
        return count * np.dtype(self.dtype).itemsize

    def with_size(self, axis: int, size: int) -> TensorSpec:
        shape = list(self.shape)
        shape[axis] = size
        return replace(self, shape=tuple(shape))


QUANTILES = 33  # of an example's values: enough to follow a skewed or bimodal distribution


@dataclass(frozen=True)
class Values:
    """The distribution of a float tensor's values (an example input, or calibration data), kept
    as quantiles so synthetic samples can be drawn from it: an image in [0, 1) gives samples in
    [0, 1), whole 0-255 pixels give whole 0-255 values, a normalized image its own range."""

    quantiles: tuple[float, ...]
    whole: bool  # every value is an integer (pixels): samples are rounded too
    origin: str = "example"

    @staticmethod
    def of(arrays: Iterable[np.ndarray], origin: str = "example") -> Values | None:
        """None when the values say nothing: not float, non-finite, or constant (a `torch.zeros`
        example gives the shape, not the range)."""
        import numpy as np
        parts = [np.asarray(a).reshape(-1) for a in arrays]
        parts = [p for p in parts if p.size and p.dtype.kind == "f"]
        if not parts:
            return None
        flat = np.concatenate(parts).astype(np.float64)
        if flat.size > 1 << 20:  # quantiles of a seeded subsample: same distribution, bounded cost
            flat = np.random.default_rng(0).choice(flat, 1 << 20, replace=False)
        if not np.isfinite(flat).all() or flat.min() == flat.max():
            return None
        q = np.quantile(flat, np.linspace(0.0, 1.0, QUANTILES))
        return Values(tuple(float(v) for v in q), bool(np.all(flat == np.round(flat))), origin)

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        import numpy as np
        u = rng.random(shape)
        x = np.interp(u, np.linspace(0.0, 1.0, len(self.quantiles)), self.quantiles)
        return np.asarray(np.round(x) if self.whole else x, dtype=dtype)  # 0-d stays an array (np.interp unboxes it)

    def to_json(self) -> dict:
        q = self.quantiles
        return {"origin": self.origin, "min": q[0], "median": q[len(q) // 2], "max": q[-1], "whole": self.whole}


@dataclass(frozen=True)
class InputOverride:
    """One `--input NAME:D0,D1,...[:DTYPE]` option."""

    name: str
    shape: tuple[int, ...] | None
    dtype: str | None


_NAME = r".+"  # greedy, so names may hold ":" (TensorFlow names do: "input:0")


def parse_input(text: str) -> InputOverride:
    m = re.fullmatch(rf"({_NAME}):([0-9, ]*)(?::([a-z0-9]+))?", text.strip())
    if not m:
        raise UsageError(f"--input {text!r}: expected NAME:D0,D1,...[:DTYPE], e.g. image:1,3,224,224:float32")
    name, dims, dtype = m.group(1), m.group(2), m.group(3)
    shape = tuple(int(d) for d in dims.replace(" ", "").split(",") if d) if dims.strip() else None
    if shape is not None and any(d <= 0 for d in shape):
        raise UsageError(f"--input {text!r}: dimensions must be positive integers")
    if dtype is not None and dtype not in DTYPES:
        raise UsageError(f"--input {text!r}: unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    return InputOverride(name=name, shape=shape, dtype=dtype)


def parse_dynamic(text: str) -> tuple[str, int]:
    m = re.fullmatch(r"(.+):(-?\d+)", text.strip())
    if not m:
        raise UsageError(f"--dynamic {text!r}: expected NAME:AXIS, e.g. input_ids:1")
    return m.group(1), int(m.group(2))


def apply_overrides(specs: Sequence[TensorSpec], overrides: Iterable[InputOverride],
                    dynamic: Iterable[tuple[str, int]] = ()) -> list[TensorSpec]:
    """Return `specs` with `--input` and `--dynamic` applied; unknown names are usage errors.

    When the model declares no inputs yet (an entrypoint without example inputs), the overrides
    alone define them, in the order given.
    """
    specs = list(specs)
    by_name = {s.name: i for i, s in enumerate(specs)}
    overrides = list(overrides)
    if not specs:
        for o in overrides:
            if o.shape is None:
                raise UsageError(f"--input {o.name}: the model gives no shape for it; pass NAME:D0,D1,...")
            specs.append(TensorSpec(o.name, o.shape, o.dtype or "float32"))
        by_name = {s.name: i for i, s in enumerate(specs)}
    else:
        for o in overrides:
            if o.name not in by_name:
                raise UsageError(f"--input {o.name}: the model has no input of that name; "
                                 f"its inputs are {', '.join(by_name)}")
            s = specs[by_name[o.name]]
            specs[by_name[o.name]] = replace(s, shape=o.shape or s.shape, dtype=o.dtype or s.dtype)
    for name, axis in dynamic:
        if name not in by_name:
            raise UsageError(f"--dynamic {name}:{axis}: the model has no input of that name; "
                             f"its inputs are {', '.join(by_name)}")
        s = specs[by_name[name]]
        rank = len(s.shape)
        if not -rank <= axis < rank:
            raise UsageError(f"--dynamic {name}:{axis}: {name} has rank {rank}")
        specs[by_name[name]] = replace(s, dynamic=tuple(sorted({*s.dynamic, axis % rank})))
    for s in specs:
        if any(not isinstance(d, int) or d <= 0 for d in s.shape):
            raise UsageError(f"input {s.name} has no static shape {list(s.shape)}; "
                             f"pass --input {s.name}:D0,D1,... (and --dynamic {s.name}:AXIS to keep an axis dynamic)")
    return specs


def image_channels(spec: TensorSpec, channel_last: bool) -> int | None:
    """The channel count of a 4-D input that looks like an image (1, 3 or 4 channels), else None."""
    if len(spec.shape) != 4:
        return None
    channels = spec.shape[3] if channel_last else spec.shape[1]
    return channels if channels in (1, 3, 4) else None


def second_size(size: int) -> int:
    """The other size a dynamic axis is validated at."""
    return size * 2 if size > 1 else 3


@dataclass
class SampleSet:
    """Seeded input samples: `feeds[i]` maps input name -> array."""

    feeds: list[dict[str, np.ndarray]] = field(default_factory=list)
    origin: str = "synthetic"

    def __len__(self) -> int:
        return len(self.feeds)


def synthetic_samples(specs: Sequence[TensorSpec], count: int, seed: int) -> SampleSet:
    """Deterministic samples: floats drawn from the input's example values (standard normal when
    it has none), integers uniform in each input's range."""
    import numpy as np
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(count):
        feed = {}
        for s in specs:
            if s.dtype.startswith("float") and s.values is not None:
                feed[s.name] = s.values.sample(rng, s.shape, s.dtype)
            elif s.dtype.startswith("float"):
                feed[s.name] = rng.standard_normal(s.shape).astype(s.dtype)
            elif s.dtype == "bool":
                feed[s.name] = rng.integers(0, 2, s.shape).astype(bool)
            else:
                lo, hi = s.int_range or (0, 10)
                feed[s.name] = rng.integers(lo, hi, s.shape).astype(s.dtype)
        feeds.append(feed)
    return SampleSet(feeds=feeds, origin=f"synthetic (seed {seed})")
