"""Execute a loaded ML Program op by op in numpy.

The whole function is checked before anything runs: one unsupported op (or control flow) and the
executor refuses the file with every offender named, because a parity verdict from a program we
only partly ran would be worthless. Nothing is ever skipped.

Precision: each op computes in float32 when its inputs are float16, and its outputs are rounded to
the dtypes the file declares. An fp16 program therefore carries fp16 tensors between ops, as the
device does, with each op's float32 result rounded once to fp16; a device that accumulates in fp16
can differ from this by a few fp16 ulps per op (which is what the fp16 thresholds allow).
Every output's shape is checked against the declared one (its fixed dims, for flexible shapes), so
a slip in an op's semantics that changes a shape shows up as a refusal, not as a wrong number.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from bridge.errors import RuntimeUnavailable, UsageError

from .ops import load_families
from .precision import round_to_fp16

_CONTROL_FLOW = ("cond", "while_loop")


def walk(block) -> Iterator:
    """Every op of `block` and of the blocks nested in its ops, in program order."""
    for mil_op in block.operations:
        yield mil_op
        for inner in mil_op.blocks:
            yield from walk(inner)


def unsupported(function) -> list[str]:
    """One line per op the executor cannot run, in program order."""
    ops = load_families()
    problems = []
    for mil_op in walk(function):
        if mil_op.op_type == "const":
            continue
        if mil_op.op_type in _CONTROL_FLOW or mil_op.blocks or mil_op.op_type not in ops:
            problems.append(f"op {mil_op.op_type} (name {mil_op.name}) unsupported by the reference executor")
    return problems


def np_dtype(var) -> np.dtype:
    from coremltools.converters.mil.mil.types.type_mapping import nptype_from_builtin

    return np.dtype(nptype_from_builtin(var.dtype))


def declared_dims(var) -> tuple[int | None, ...]:
    """The declared shape, None for each symbolic dim (flexible input shapes)."""
    return tuple(int(d) if isinstance(d, (int, np.integer)) else None for d in var.shape)


def fits(shape: tuple[int, ...], dims: tuple[int | None, ...]) -> bool:
    return len(shape) == len(dims) and all(d is None or d == s for s, d in zip(shape, dims, strict=True))


def _compute_value(value):
    """How a tensor is kept between ops: float16 widened to float32 (holding the same fp16
    values), so every op computes in float32; bool scalars as Python bools (numpy refuses np.bool_
    as `keepdims` and the like); everything else as declared."""
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (np.ndarray, np.floating)) and value.dtype == np.float16:
        return value.astype(np.float32)
    return value


def _declared(value, dtype: np.dtype):
    """An op's result rounded to its declared dtype, kept as the executor keeps tensors."""
    value = np.asarray(value)
    if dtype == np.float16:
        if value.dtype == np.float32:
            return round_to_fp16(value)
        return value.astype(np.float16).astype(np.float32)  # one rounding from float64, never two
    return _compute_value(value.astype(dtype, copy=False))


@dataclass(frozen=True)
class Step:
    """One op, resolved once: its implementation, where its inputs come from, what it declares."""

    op: object  # the MIL Operation
    impl: Callable
    args: tuple[tuple[str, str | tuple[str, ...]], ...]  # (parameter, var name or names)
    outputs: tuple[tuple[str, np.dtype, tuple[int | None, ...]], ...]  # (var name, dtype, declared dims)

    @classmethod
    def of(cls, mil_op, impl: Callable) -> Step:
        args = tuple((p, tuple(v.name for v in var) if isinstance(var, (list, tuple)) else var.name)
                     for p, var in mil_op.inputs.items())
        outputs = tuple((v.name, np_dtype(v), declared_dims(v)) for v in mil_op.outputs)
        return cls(mil_op, impl, args, outputs)

    def run(self, env: dict) -> None:
        kwargs = {p: [env[n] for n in src] if isinstance(src, tuple) else env[src] for p, src in self.args}
        op_type, name = self.op.op_type, self.op.name
        try:
            result = self.impl(self.op, **kwargs) if self.impl.wants_op else self.impl(**kwargs)
        except NotImplementedError as e:
            raise RuntimeUnavailable(f"op {op_type} (name {name}) unsupported by the reference executor: {e}") from e
        except Exception as e:
            e.add_note(f"while the Core ML reference executor ran op {op_type} (name {name})")
            raise
        results = result if isinstance(result, tuple) else (result,)
        if len(results) != len(self.outputs):
            raise RuntimeUnavailable(f"op {op_type} (name {name}) gave {len(results)} outputs, "
                                     f"the file declares {len(self.outputs)}")
        for (var, dtype, dims), value in zip(self.outputs, results, strict=True):
            out = _declared(value, dtype)
            if not fits(out.shape, dims):
                raise RuntimeUnavailable(f"op {op_type} (name {name}) computed shape {out.shape} but the file "
                                         f"declares {dims}; the reference executor cannot vouch for this program")
            env[var] = out


class Executor:
    """Runs one function of a MIL program. Constants and decompressed weights are materialized
    once, here; `run` executes the remaining ops for each feed."""

    def __init__(self, program, function: str = "main"):
        if function not in program.functions:
            raise RuntimeUnavailable(f"the program has no function {function!r} "
                                     f"(it has {sorted(program.functions)})")
        self.function = program.functions[function]
        problems = unsupported(self.function)
        if problems:
            raise RuntimeUnavailable("; ".join(problems))
        ops = load_families()
        self.inputs = dict(self.function.inputs)
        self.outputs = {v.name: np_dtype(v) for v in self.function.outputs}
        self.constants: dict[str, object] = {}
        self.plan: list[Step] = []
        for mil_op in self.function.operations:
            if mil_op.op_type == "const":
                self.constants[mil_op.outputs[0].name] = _compute_value(mil_op.outputs[0].val)
            elif mil_op.op_type.startswith("constexpr_"):
                Step.of(mil_op, ops[mil_op.op_type]).run(self.constants)
            else:
                self.plan.append(Step.of(mil_op, ops[mil_op.op_type]))

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        env = dict(self.constants)
        for name, var in self.inputs.items():
            env[name] = _compute_value(self._feed_value(name, var, feed))
        with np.errstate(all="ignore"):  # inf/nan propagate as on device; they are not executor errors
            for step in self.plan:
                step.run(env)
        return {name: np.asarray(env[name]).astype(dtype, copy=False) for name, dtype in self.outputs.items()}

    def _feed_value(self, name: str, var, feed: dict) -> np.ndarray:
        if name not in feed:
            raise UsageError(f"missing input {name!r}; the model takes {sorted(self.inputs)}")
        value = np.asarray(feed[name]).astype(np_dtype(var), copy=False)  # e.g. int64 -> int32, as Core ML
        if not fits(value.shape, declared_dims(var)):
            raise UsageError(f"input {name!r} has shape {value.shape}; the model declares {tuple(var.shape)}")
        return value
