"""Execute a loaded ML Program op by op in numpy.

The whole function is checked before anything runs: one unsupported op (or control flow) and the
executor refuses the file with every offender named, because a parity verdict from a program we
only partly ran would be worthless. Nothing is ever skipped.

Precision: each op computes in float32 when its inputs are float16, and its outputs are rounded to
the dtypes the file declares. An fp16 program therefore carries fp16 tensors between ops, as the
device does, with each op's float32 result rounded once to fp16; a device that accumulates in fp16
can differ from this by a few fp16 ulps per op (which is what the fp16 thresholds allow). Ops that
only copy values (see ops) skip a rounding that could not change them.
Every output's shape is checked against the declared one (its fixed dims, for flexible shapes), so
a slip in an op's semantics that changes a shape shows up as a refusal, not as a wrong number.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from bridge.base.errors import RuntimeUnavailable, UsageError

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


def _as_float32(value):
    """`_declared` for float32: most results already are float32 arrays, left as they are."""
    if value.__class__ is np.ndarray and value.dtype == np.float32:
        return value
    return _declared(value, np.dtype(np.float32))


def _finisher(dtype: np.dtype, exact_in_fp16: bool) -> Callable:
    """How results of declared dtype `dtype` are kept, chosen once per op output."""
    if dtype == np.float32 or (dtype == np.float16 and exact_in_fp16):
        return _as_float32
    return lambda value: _declared(value, dtype)


def _exact_in_fp16(mil_op, impl: Callable) -> bool:
    """Whether the op's float results are fp16 values without rounding: it only copies input values
    (see ops) and every float input is declared fp16."""
    if not impl.copies_values:
        return False
    inputs = [v for var in mil_op.inputs.values() for v in (var if isinstance(var, (list, tuple)) else [var])]
    return all(dtype == np.float16 for dtype in map(np_dtype, inputs) if dtype.kind == "f")


@dataclass(frozen=True)
class Step:
    """One op, resolved once: its implementation, where its inputs come from, what it declares."""

    op: object  # the MIL Operation
    call: Callable  # the implementation, with the op bound when it asks for it
    args: tuple[tuple[str, str | tuple[str, ...]], ...]  # (parameter, var name or names)
    outputs: tuple[tuple[str, Callable, tuple[int | None, ...]], ...]  # (var name, finisher, declared dims)

    @classmethod
    def of(cls, mil_op, impl: Callable) -> Step:
        args = tuple((p, tuple(v.name for v in var) if isinstance(var, (list, tuple)) else var.name)
                     for p, var in mil_op.inputs.items())
        exact = _exact_in_fp16(mil_op, impl)
        outputs = tuple((v.name, _finisher(np_dtype(v), exact), declared_dims(v)) for v in mil_op.outputs)
        return cls(mil_op, functools.partial(impl, mil_op) if impl.wants_op else impl, args, outputs)

    def run(self, env: dict) -> None:
        kwargs = {p: env[src] if src.__class__ is str else [env[n] for n in src] for p, src in self.args}
        try:
            result = self.call(**kwargs)
        except NotImplementedError as e:
            raise RuntimeUnavailable(f"op {self.op.op_type} (name {self.op.name}) unsupported by the reference "
                                     f"executor: {e}") from e
        except Exception as e:
            e.add_note(f"while the Core ML reference executor ran op {self.op.op_type} (name {self.op.name})")
            raise
        if len(self.outputs) == 1 and result.__class__ is not tuple:
            var, finish, dims = self.outputs[0]
            out = env[var] = finish(result)
            if out.shape != dims:
                self._check_shape(out.shape, dims)
            return
        results = result if isinstance(result, tuple) else (result,)
        if len(results) != len(self.outputs):
            raise RuntimeUnavailable(f"op {self.op.op_type} (name {self.op.name}) gave {len(results)} outputs, "
                                     f"the file declares {len(self.outputs)}")
        for (var, finish, dims), value in zip(self.outputs, results, strict=True):
            out = env[var] = finish(value)
            self._check_shape(out.shape, dims)

    def _check_shape(self, shape: tuple[int, ...], dims: tuple[int | None, ...]) -> None:
        if not fits(shape, dims):
            raise RuntimeUnavailable(f"op {self.op.op_type} (name {self.op.name}) computed shape {shape} but the "
                                     f"file declares {dims}; the reference executor cannot vouch for this program")


def _dead_after(plan: list[Step], keep: set[str]) -> list[tuple[str, ...]]:
    """For each step, the values no later step reads (outputs in `keep` excepted). Dropping them
    as the program runs lets numpy reuse their memory while it is still in cache, rather than
    keeping every intermediate tensor alive until the end."""
    last = {}
    for i, step in enumerate(plan):
        for _, src in step.args:
            for name in (src,) if isinstance(src, str) else src:
                last[name] = i
    dead = [[] for _ in plan]
    for name, i in last.items():
        if name not in keep:
            dead[i].append(name)
    return [tuple(names) for names in dead]


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
        self.dead_after = _dead_after(self.plan, keep=set(self.outputs))

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        env = dict(self.constants)
        for name, var in self.inputs.items():
            env[name] = _compute_value(self._feed_value(name, var, feed))
        with np.errstate(all="ignore"):  # inf/nan propagate as on device; they are not executor errors
            for step, dead in zip(self.plan, self.dead_after, strict=True):
                step.run(env)
                for name in dead:
                    del env[name]
        return {name: np.asarray(env[name]).astype(dtype, copy=False) for name, dtype in self.outputs.items()}

    def _feed_value(self, name: str, var, feed: dict) -> np.ndarray:
        if name not in feed:
            raise UsageError(f"missing input {name!r}; the model takes {sorted(self.inputs)}")
        value = np.asarray(feed[name]).astype(np_dtype(var), copy=False)  # e.g. int64 -> int32, as Core ML
        if not fits(value.shape, declared_dims(var)):
            raise UsageError(f"input {name!r} has shape {value.shape}; the model declares {tuple(var.shape)}")
        return value
