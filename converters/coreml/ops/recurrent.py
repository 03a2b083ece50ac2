"""LSTM, GRU and RNN, unrolled over a static sequence length.

Each is lowered step by step with plain MIL ops (matmul, split, the gate activations, select),
following ONNX's equations exactly: every gate order, bias, peephole, clip, activation list,
linear_before_reset, direction, layout and sequence_lens. MIL's own lstm/gru/rnn ops would need
ONNX's gate layout and options mapped onto theirs, and several options (clip on every gate,
linear_before_reset=0, per-batch sequence lengths) have no MIL counterpart. The price is a
program that grows with the sequence length, hence MAX_STEPS.

Tensors stay three-dimensional throughout, (1, batch, features) per step: the input projection of
every step is one matmul up front, each step adds its recurrent projection, and the steps are
concatenated along the time axis at the end. sequence_lens becomes a mask per step: a step past
a sequence's length leaves its state unchanged and outputs zeros, which also makes the reverse
direction start at each sequence's own last element, as ONNX defines it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil.types.symbolic import is_symbolic

from bridge.converters.coreml.context import attrs
from bridge.converters.coreml.ops.arithmetic import np_dtype
from bridge.converters.coreml.registry import register

MAX_STEPS = 1024  # time steps unrolled per direction

# ONNX activation name -> MIL op, and the defaults ONNX gives the ones that take parameters
ACTIVATIONS: dict[str, Callable] = {
    "Sigmoid": lambda x: mb.sigmoid(x=x), "Tanh": lambda x: mb.tanh(x=x), "Relu": lambda x: mb.relu(x=x),
    "Softsign": lambda x: mb.softsign(x=x), "Softplus": lambda x: mb.softplus(x=x),
    "HardSigmoid": lambda x: mb.sigmoid_hard(x=x, alpha=_like(0.2, x), beta=_like(0.5, x)),
    "LeakyRelu": lambda x: mb.leaky_relu(x=x, alpha=_like(0.01, x)),
    "Elu": lambda x: mb.elu(x=x, alpha=_like(1.0, x)),
}
DEFAULTS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh"), "RNN": ("Tanh",)}
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def refusal(a: dict) -> str | None:
    """Attribute combinations not lowered (shared with the preflight)."""
    if a.get("activation_alpha") or a.get("activation_beta"):
        return "activation_alpha/activation_beta (activation parameters other than the defaults)"
    if a.get("input_forget", 0):
        return "input_forget=1"
    unknown = sorted({n for n in activation_names(a) if n not in ACTIVATIONS})
    if unknown:
        return f"activations {', '.join(unknown)}"
    return None


def activation_names(a: dict) -> list[str]:
    return [n.decode() if isinstance(n, bytes) else n for n in a.get("activations") or ()]


def _like(value: float, x) -> np.ndarray:
    return np.asarray(value, np_dtype(x))


@dataclass(frozen=True)
class Direction:
    """One direction's constants: W (gates*H, I), R (gates*H, H), biases, peepholes, activations."""

    w: np.ndarray
    r: np.ndarray
    wb: np.ndarray
    rb: np.ndarray
    peephole: np.ndarray | None
    activations: tuple[Callable, ...]
    reverse: bool


class Recurrence:
    """What every step of every direction shares."""

    def __init__(self, ctx, node):
        self.ctx, self.node = ctx, node
        a = attrs(node)
        self.a, self.op = a, node.op_type
        why = refusal(a)
        if why:
            raise ctx.unsupported(node, why)
        self.hidden = int(a["hidden_size"])
        self.layout = int(a.get("layout", 0))
        self.clip = a.get("clip")
        self.directions = self._directions()
        x = ctx.var(node.input[0])
        if self.layout:
            x = mb.transpose(x=x, perm=[1, 0, 2])
        self.x = x
        steps, batch = x.shape[0], x.shape[1]
        if is_symbolic(steps):
            raise ctx.unsupported(node, "a run-time sequence length (the recurrence is unrolled)")
        if int(steps) > MAX_STEPS:
            raise ctx.unsupported(node, f"{steps} time steps (at most {MAX_STEPS} are unrolled)")
        self.steps, self.batch = int(steps), batch
        self.masks = self._masks()

    def _const(self, index: int, what: str) -> np.ndarray | None:
        node = self.node
        if len(node.input) <= index or not node.input[index]:
            return None
        v = self.ctx.const(node.input[index])
        if v is None:
            raise self.ctx.unsupported(node, f"{what} must be constant for Core ML")
        return v.astype(np.float32)

    def _directions(self) -> list[Direction]:
        ctx, node, a = self.ctx, self.node, self.a
        direction = a.get("direction", "forward")
        count = 2 if direction == "bidirectional" else 1
        gates, hidden = GATES[self.op], self.hidden
        w, r = self._const(1, "W"), self._const(2, "R")
        b = self._const(3, "B")
        b = np.zeros((count, 2 * gates * hidden), np.float32) if b is None else b
        p = self._const(7, "P") if self.op == "LSTM" else None
        names = activation_names(a) or list(DEFAULTS[self.op]) * count
        per = len(DEFAULTS[self.op])
        if len(names) != per * count:
            raise ctx.unsupported(node, f"{len(names)} activations for {count} direction(s)")
        out = []
        for d in range(count):
            fns = tuple(ACTIVATIONS[n] for n in names[d * per:(d + 1) * per])
            out.append(Direction(w[d], r[d], b[d, :gates * hidden], b[d, gates * hidden:],
                                 None if p is None else p[d], fns, direction == "reverse" or d == 1))
        return out

    def _masks(self) -> list | None:
        """Per step, where the step is inside each sequence: (1, batch, 1) bools, or None when
        every sequence runs the full length."""
        node = self.node
        if len(node.input) <= 4 or not node.input[4]:
            return None
        lens = self.ctx.const(node.input[4])
        if lens is not None:
            if (lens >= self.steps).all():
                return None
            return [(t < lens.astype(np.int64)).reshape(1, -1, 1) for t in range(self.steps)]
        lens = mb.reshape(x=mb.cast(x=self.ctx.var(node.input[4]), dtype="int32"), shape=np.int32([1, -1, 1]))
        return [mb.less(x=np.int32(t), y=lens) for t in range(self.steps)]

    def initial(self, index: int, d: int):
        """Direction d's initial state (1, batch, H) from input `index`, or None for zeros."""
        node = self.node
        if len(node.input) <= index or not node.input[index]:
            return None
        v = self.ctx.var(node.input[index])
        if self.layout:  # (batch, dirs, H)
            v = v.transpose(1, 0, 2) if isinstance(v, np.ndarray) else mb.transpose(x=v, perm=[1, 0, 2])
        if isinstance(v, np.ndarray):
            return v[d:d + 1].astype(np.float32)
        return mb.slice_by_index(x=v, begin=np.int32([d, 0, 0]), end=np.int32([d + 1, 0, 0]),
                                 end_mask=[False, True, True])

    def gate(self, x, fn):
        if self.clip is not None:
            x = mb.clip(x=x, alpha=_like(-self.clip, x), beta=_like(self.clip, x))
        return fn(x)

    def projected_inputs(self, d: Direction) -> list:
        """X_t W^T + Wb (+ Rb where it adds straight in) for every step: one matmul, then a split."""
        bias = d.wb + d.rb if not self._resets_before_recurrence() else d.wb
        dtype = np_dtype(self.x)
        xw = mb.add(x=mb.matmul(x=self.x, y=np.ascontiguousarray(d.w.T).astype(dtype)), y=bias.astype(dtype))
        return list(mb.split(x=xw, num_splits=self.steps, axis=0)) if self.steps > 1 else [xw]

    def _resets_before_recurrence(self) -> bool:
        """GRU keeps Rb_h apart from the sum: it goes inside the reset gate's product (linear_before_reset)
        or is added after it (not): either way after the split."""
        return self.op == "GRU"

    def masked(self, t: int, new, old):
        """The step's state where the sequence is still running, else the previous one; and the
        step's output, zeros past the end."""
        if self.masks is None:
            return new, new
        mask = self.masks[t]
        zeros = _like(0, new)
        out = mb.select(cond=mask, a=new, b=zeros)
        return (out if old is None else mb.select(cond=mask, a=new, b=old)), out

    def outputs(self, per_direction: list[tuple[list, list]]):
        """Y (T, dirs, B, H) and the final states (dirs, B, H) in ONNX's layout; `per_direction`
        holds each direction's outputs (time order) and final states."""
        node, ctx = self.node, self.ctx
        ys = [mb.expand_dims(x=mb.concat(values=outs, axis=0) if len(outs) > 1 else outs[0], axes=[1])
              for outs, _ in per_direction]
        results = [mb.concat(values=ys, axis=1) if len(ys) > 1 else ys[0]]
        for k in range(len(per_direction[0][1])):
            finals = [states[k] for _, states in per_direction]
            results.append(mb.concat(values=finals, axis=0) if len(finals) > 1 else finals[0])
        for i, value in enumerate(results):
            if len(node.output) <= i or not node.output[i]:
                continue
            perm = ([2, 0, 1, 3] if i == 0 else [1, 0, 2]) if self.layout else None
            named = {"name": ctx.name(node, i)}
            ctx.set(node.output[i], mb.transpose(x=value, perm=perm, **named) if perm else
                    mb.identity(x=value, **named))


def _recurrent(ctx, x, r: np.ndarray):
    """h (1, B, H) @ R^T."""
    return mb.matmul(x=x, y=np.ascontiguousarray(r.T).astype(np_dtype(x)))


def _lstm_direction(rec: Recurrence, d: Direction, k: int):
    f, g, h = d.activations
    hidden = rec.hidden
    xw = rec.projected_inputs(d)
    state, cell = rec.initial(5, k), rec.initial(6, k)
    peep = None if d.peephole is None else [d.peephole[k * hidden:(k + 1) * hidden] for k in range(3)]  # i, o, f
    outputs = [None] * rec.steps
    for t in (reversed(range(rec.steps)) if d.reverse else range(rec.steps)):
        pre = xw[t] if state is None else mb.add(x=xw[t], y=_recurrent(rec.ctx, state, d.r))
        i, o, fg, c = mb.split(x=pre, num_splits=4, axis=-1)
        if peep is not None and cell is not None:
            i = mb.add(x=i, y=mb.mul(x=cell, y=_like_arr(peep[0], i)))
            fg = mb.add(x=fg, y=mb.mul(x=cell, y=_like_arr(peep[2], fg)))
        i, fg, c = rec.gate(i, f), rec.gate(fg, f), rec.gate(c, g)
        new_cell = mb.mul(x=i, y=c) if cell is None else mb.add(x=mb.mul(x=fg, y=cell), y=mb.mul(x=i, y=c))
        if peep is not None:
            o = mb.add(x=o, y=mb.mul(x=new_cell, y=_like_arr(peep[1], o)))
        new_state = mb.mul(x=rec.gate(o, f), y=h(new_cell))
        cell, _ = rec.masked(t, new_cell, cell)
        state, outputs[t] = rec.masked(t, new_state, state)
    return outputs, [state, cell]


def _gru_direction(rec: Recurrence, d: Direction, k: int):
    f, g = d.activations
    hidden = rec.hidden
    xw = rec.projected_inputs(d)
    rb = [d.rb[k * hidden:(k + 1) * hidden] for k in range(3)]  # z, r, h
    before_reset = bool(rec.a.get("linear_before_reset", 0))
    state = rec.initial(5, k)
    outputs = [None] * rec.steps
    for t in (reversed(range(rec.steps)) if d.reverse else range(rec.steps)):
        z, r, hh = mb.split(x=xw[t], num_splits=3, axis=-1)
        z, r = mb.add(x=z, y=_like_arr(rb[0], z)), mb.add(x=r, y=_like_arr(rb[1], r))
        if state is not None:  # linear_before_reset=0 needs only R_z and R_r on the state itself
            rows = d.r if before_reset else d.r[:2 * hidden]
            parts = mb.split(x=_recurrent(rec.ctx, state, rows), num_splits=3 if before_reset else 2, axis=-1)
            z, r = mb.add(x=z, y=parts[0]), mb.add(x=r, y=parts[1])
            rh = parts[2] if before_reset else None
        z, r = rec.gate(z, f), rec.gate(r, f)
        if state is None:  # a zero state leaves Rb_h, inside the reset gate's product or not
            recurrent = mb.mul(x=r, y=_like_arr(rb[2], r)) if before_reset else _like_arr(rb[2], r)
        elif before_reset:
            recurrent = mb.mul(x=r, y=mb.add(x=rh, y=_like_arr(rb[2], rh)))
        else:
            recurrent = mb.add(x=_recurrent(rec.ctx, mb.mul(x=r, y=state), d.r[2 * hidden:]), y=_like_arr(rb[2], r))
        candidate = rec.gate(mb.add(x=hh, y=recurrent), g)
        # H = (1 - z) * candidate + z * H_prev = candidate + z * (H_prev - candidate)
        new_state = mb.sub(x=candidate, y=mb.mul(x=z, y=candidate)) if state is None else \
            mb.add(x=candidate, y=mb.mul(x=z, y=mb.sub(x=state, y=candidate)))
        state, outputs[t] = rec.masked(t, new_state, state)
    return outputs, [state]


def _rnn_direction(rec: Recurrence, d: Direction, k: int):
    (f,) = d.activations
    xw = rec.projected_inputs(d)
    state = rec.initial(5, k)
    outputs = [None] * rec.steps
    for t in (reversed(range(rec.steps)) if d.reverse else range(rec.steps)):
        pre = xw[t] if state is None else mb.add(x=xw[t], y=_recurrent(rec.ctx, state, d.r))
        state, outputs[t] = rec.masked(t, rec.gate(pre, f), state)
    return outputs, [state]


def _like_arr(value: np.ndarray, x) -> np.ndarray:
    return np.asarray(value, np_dtype(x))


def _convert(step: Callable):
    def convert(ctx, node):
        rec = Recurrence(ctx, node)
        per_direction = [step(rec, d, k) for k, d in enumerate(rec.directions)]
        per_direction = [(outs, [s if not isinstance(s, np.ndarray) else mb.const(val=s) for s in states])
                         for outs, states in per_direction]
        rec.outputs(per_direction)

    return convert


register("LSTM", since=7)(_convert(_lstm_direction))
register("GRU", since=7)(_convert(_gru_direction))
register("RNN", since=7)(_convert(_rnn_direction))
