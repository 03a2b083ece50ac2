"""Tensor layout and shape ops: reshape, slice, gather, pad, concat and friends.

Two rules run through this file. When every data input is a numpy constant the op is computed with
numpy, so shape arithmetic (Shape -> Gather -> Concat -> Reshape) reaches MIL as constants. Otherwise
parameters (axes, pads, starts, target shapes) must be known at conversion time, because MIL takes
most of them as consts; a parameter that is not known is refused by name rather than guessed.
Core ML has no int64: folded results keep ONNX's dtypes, `ctx.var` narrows them for MIL.
"""

from __future__ import annotations

import numpy as np
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil import types
from coremltools.converters.mil.mil.types.symbolic import is_symbolic

from bridge.converters.coreml.context import attrs
from bridge.converters.coreml.registry import register

INT32_MAX = 2**31 - 1


# helpers ---------------------------------------------------------------------------------------
def _np(ctx, name):
    """The tensor as numpy if it is a conversion-time constant, else None. Only numpy counts: a MIL
    Var whose value MIL happens to know still goes through the MIL op, which keeps MIL's own value
    inference (and so the tests) exercising the lowering."""
    v = ctx.value(name)
    return v if isinstance(v, np.ndarray) else None


def _known(ctx, node, index: int, what: str):
    """A parameter input Core ML needs at conversion time; None when the input is absent."""
    if len(node.input) <= index or not node.input[index]:
        return None
    v = ctx.const(node.input[index])
    if v is None:
        raise ctx.unsupported(node, f"{what} must be known at conversion time")
    return v


def _dims(v) -> list[int | None]:
    """Static dims as ints; symbolic dims (known only at run time) as None."""
    return [None if is_symbolic(d) else int(d) for d in v.shape]


def _axes(axes, rank: int) -> list[int]:
    return [int(a) + rank if int(a) < 0 else int(a) for a in axes]


def _np_dtype(v) -> np.dtype:
    """The numpy dtype of a numpy constant or a MIL Var (a constant tensor can meet a run-time shape)."""
    return v.dtype if isinstance(v, np.ndarray) else np.dtype(types.nptype_from_builtin(v.dtype))


def _out(ctx, node, value) -> None:
    ctx.set(node.output[0], value)


# reshape family --------------------------------------------------------------------------------
def _reshape_target(dims, shape, allowzero: int) -> list:
    """ONNX's 0 copies the input dim at the same index (counted from the left); resolved here
    because MIL's 0 (iOS17) counts from the right. A 0 over a symbolic dim stays None."""
    return [dims[i] if s == 0 and not allowzero else int(s) for i, s in enumerate(shape)]


@register("Reshape", since=5)
def reshape(ctx, node):
    shape, allowzero = ctx.const(node.input[1]), attrs(node).get("allowzero", 0)
    data = _np(ctx, node.input[0])
    if data is not None and shape is not None:
        return _out(ctx, node, data.reshape(_reshape_target(data.shape, shape, allowzero)))
    x = ctx.var(node.input[0])
    if shape is None:  # run-time shape: MIL's 0 equals ONNX's when len(shape) == rank, the usual case
        return _out(ctx, node, mb.reshape(x=x, shape=ctx.var(node.input[1]), name=ctx.name(node)))
    if allowzero and 0 in shape:
        raise ctx.unsupported(node, "allowzero with a 0 in shape makes an empty tensor")
    target = _reshape_target(_dims(x), shape, allowzero)
    unknown = target.count(None)
    if unknown == 1 and -1 not in target:
        target = [-1 if t is None else t for t in target]
    elif unknown and len(target) == len(x.shape):
        target = [0 if t is None else t for t in target]  # MIL copies the same-index dim too
    elif unknown:  # several 0s over run-time dims: the target shape is assembled at run time
        dims = mb.shape(x=x)
        parts = [np.int32([t]) if t is not None else
                 mb.slice_by_index(x=dims, begin=np.int32([i]), end=np.int32([i + 1])) for i, t in enumerate(target)]
        return _out(ctx, node, mb.reshape(x=x, shape=mb.concat(values=parts, axis=0), name=ctx.name(node)))
    _out(ctx, node, mb.reshape(x=x, shape=np.asarray(target, np.int32), name=ctx.name(node)))


@register("Flatten")
def flatten(ctx, node):
    axis = attrs(node).get("axis", 1)
    data = _np(ctx, node.input[0])
    if data is not None:
        axis = axis + data.ndim if axis < 0 else axis
        return _out(ctx, node, data.reshape(int(np.prod(data.shape[:axis])), int(np.prod(data.shape[axis:]))))
    x = ctx.var(node.input[0])
    axis = axis + len(x.shape) if axis < 0 else axis
    if axis in (0, len(x.shape)):  # MIL's flatten2d value inference breaks here (np.prod(()) is a float)
        shape = [1, -1] if axis == 0 else [-1, 1]
        return _out(ctx, node, mb.reshape(x=x, shape=np.int32(shape), name=ctx.name(node)))
    _out(ctx, node, mb.flatten2d(x=x, axis=axis, name=ctx.name(node)))


@register("Transpose")
def transpose(ctx, node):
    x = ctx.value(node.input[0])
    perm = attrs(node).get("perm") or list(range(len(x.shape)))[::-1]
    if isinstance(x, np.ndarray):
        return _out(ctx, node, np.transpose(x, perm))
    _out(ctx, node, mb.transpose(x=ctx.var(node.input[0]), perm=perm, name=ctx.name(node)))


def _symbolic_value(v) -> bool:
    """A Var holding run-time shape values (e.g. a batch size). expand_dims and squeeze drop MIL's
    symbolic value tracking, reshape keeps it, so downstream Reshapes still get static dims."""
    return not isinstance(v, np.ndarray) and v.val is None and v.sym_val is not None


def _squeeze(ctx, node, axes):
    x = ctx.value(node.input[0])
    axes = None if axes is None or len(axes) == 0 else _axes(axes, len(x.shape))
    if isinstance(x, np.ndarray):
        return _out(ctx, node, np.squeeze(x, axis=None if axes is None else tuple(axes)))
    if _symbolic_value(x):
        shape = [d for i, d in enumerate(x.shape) if not (d == 1 and (axes is None or i in axes))]
        return _out(ctx, node, mb.reshape(x=x, shape=np.int32(shape), name=ctx.name(node)))
    if axes is not None and None in [_dims(x)[a] for a in axes]:
        return _out(ctx, node, _squeeze_run_time_dims(ctx, node, x, axes))
    kwargs = {} if axes is None else {"axes": axes}
    _out(ctx, node, mb.squeeze(x=ctx.var(node.input[0]), name=ctx.name(node), **kwargs))


def _squeeze_run_time_dims(ctx, node, x, axes):
    """ONNX promises a squeezed dim is 1 at run time; MIL's squeeze keeps a dim it cannot see is 1,
    so the rank would not drop. A reshape to the kept dims (read at run time if need be) drops it."""
    keep = [i for i in range(len(x.shape)) if i not in axes]
    dims = [_dims(x)[i] for i in keep]
    if dims.count(None) <= 1:
        return mb.reshape(x=x, shape=np.int32([-1 if d is None else d for d in dims]), name=ctx.name(node))
    kept = mb.gather(x=mb.shape(x=x), indices=np.int32(keep), axis=0)
    return mb.reshape(x=x, shape=kept, name=ctx.name(node))


@register("Squeeze", since=1)
def squeeze_v1(ctx, node):
    _squeeze(ctx, node, attrs(node).get("axes"))


@register("Squeeze", since=13)
def squeeze_v13(ctx, node):
    _squeeze(ctx, node, _known(ctx, node, 1, "axes"))


def _unsqueeze(ctx, node, axes):
    x = ctx.value(node.input[0])
    axes = _axes(axes, len(x.shape) + len(axes))  # ONNX axes index the output
    if isinstance(x, np.ndarray):
        return _out(ctx, node, np.expand_dims(x, tuple(axes)))
    if _symbolic_value(x):
        shape = list(x.shape)
        for a in sorted(axes):
            shape.insert(a, 1)
        return _out(ctx, node, mb.reshape(x=x, shape=np.int32(shape), name=ctx.name(node)))
    _out(ctx, node, mb.expand_dims(x=ctx.var(node.input[0]), axes=sorted(axes), name=ctx.name(node)))


@register("Unsqueeze", since=1)
def unsqueeze_v1(ctx, node):
    _unsqueeze(ctx, node, attrs(node)["axes"])


@register("Unsqueeze", since=13)
def unsqueeze_v13(ctx, node):
    _unsqueeze(ctx, node, list(_known(ctx, node, 1, "axes").reshape(-1)))


# joining and splitting -------------------------------------------------------------------------
@register("Concat")
def concat(ctx, node):
    axis = attrs(node)["axis"]
    values = [ctx.value(n) for n in node.input if n]
    if all(isinstance(v, np.ndarray) for v in values):
        return _out(ctx, node, np.concatenate(values, axis=axis))
    parts = [ctx.var(n) for n, v in zip(node.input, values, strict=True)
             if not (isinstance(v, np.ndarray) and v.size == 0)]  # ONNX allows empty parts, Core ML not
    if len(parts) == 1:
        return _out(ctx, node, parts[0])
    _out(ctx, node, mb.concat(values=parts, axis=axis, name=ctx.name(node)))


def _split(ctx, node, sizes, num_outputs: int | None = None):
    x = ctx.value(node.input[0])
    axis = _axes([attrs(node).get("axis", 0)], len(x.shape))[0]
    n = len(node.output)
    if sizes is None or len(sizes) == 0:
        dim = _dims(x)[axis]
        if dim is None:
            raise ctx.unsupported(node, "split of a run-time dim needs explicit sizes")
        chunk = -(-dim // (num_outputs or n)) if num_outputs else dim // n  # opset 18: last part smaller
        sizes = [chunk] * (n - 1) + [dim - chunk * (n - 1)]
    sizes = [int(s) for s in sizes]
    if isinstance(x, np.ndarray):
        parts = np.split(x, np.cumsum(sizes)[:-1], axis=axis)
    else:
        parts = mb.split(x=ctx.var(node.input[0]), split_sizes=sizes, axis=axis) if n > 1 else [ctx.var(node.input[0])]
    for name, part in zip(node.output, parts, strict=True):
        if name:
            ctx.set(name, part)


@register("Split", since=1)
def split_v1(ctx, node):
    _split(ctx, node, attrs(node).get("split") or _known(ctx, node, 1, "split"))


@register("Split", since=13)
def split_v13(ctx, node):
    _split(ctx, node, _known(ctx, node, 1, "split"))


@register("Split", since=18)
def split_v18(ctx, node):
    _split(ctx, node, _known(ctx, node, 1, "split"), attrs(node).get("num_outputs"))


# slicing and indexing --------------------------------------------------------------------------
def _slice_static(dim: int, start: int, end: int, step: int):
    """Python slice semantics are ONNX's (clamping, negative indices, INT64_MAX ends). A negative
    step that runs past index 0 ends at -1, which MIL would read as the last element: masked."""
    start, end, step = slice(start, end, step).indices(dim)
    return start, end, False, step < 0 and end < 0, len(range(start, end, step))


def _slice_dynamic(start: int, end: int, step: int):
    """Over a run-time dim: huge bounds become masks, the rest pass numpy-style to MIL."""
    begin_mask = start <= -INT32_MAX if step > 0 else start >= INT32_MAX
    end_mask = end >= INT32_MAX if step > 0 else end <= -INT32_MAX
    clip = lambda v: int(np.clip(v, -INT32_MAX, INT32_MAX))  # noqa: E731
    return clip(start), clip(end), begin_mask, end_mask, None


def _slice(ctx, node, starts, ends, axes, steps):
    x = ctx.value(node.input[0])
    rank = len(x.shape)
    axes = _axes(range(len(starts)) if axes is None else axes, rank)
    steps = [1] * len(starts) if steps is None else steps
    if isinstance(x, np.ndarray):
        index = [slice(None)] * rank
        for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
            index[a] = slice(int(s), int(e), int(st))
        return _out(ctx, node, x[tuple(index)])
    dims = _dims(x)
    begin, end, stride = [0] * rank, [0] * rank, [1] * rank
    begin_mask, end_mask = [True] * rank, [True] * rank
    for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
        bounds = (_slice_static(dims[a], int(s), int(e), int(st)) if dims[a] is not None
                  else _slice_dynamic(int(s), int(e), int(st)))
        begin[a], end[a], begin_mask[a], end_mask[a], length = bounds
        stride[a] = int(st)
        if length == 0:
            raise ctx.unsupported(node, "the slice is empty; Core ML has no empty tensors")
    _out(ctx, node, mb.slice_by_index(x=ctx.var(node.input[0]), begin=np.int32(begin), end=np.int32(end),
                                      stride=np.int32(stride), begin_mask=begin_mask, end_mask=end_mask,
                                      name=ctx.name(node)))


@register("Slice", since=1)
def slice_v1(ctx, node):
    a = attrs(node)
    _slice(ctx, node, a["starts"], a["ends"], a.get("axes"), None)


@register("Slice", since=10)
def slice_v10(ctx, node):
    if any(len(node.input) > i and node.input[i] and ctx.const(node.input[i]) is None for i in (1, 2)):
        return _slice_run_time(ctx, node)
    names = ((1, "starts"), (2, "ends"), (3, "axes"), (4, "steps"))
    _slice(ctx, node, *(_known(ctx, node, i, what) for i, what in names))


def _slice_run_time(ctx, node):
    """Starts or ends computed at run time (`position_ids[:, :seq]` with a dynamic sequence), with
    constant axes and positive steps: each bound wrapped and clamped to [0, dim] as ONNX does, then
    one slice_by_index with run-time begin and end."""
    x = ctx.var(node.input[0])
    rank = len(x.shape)
    axes = _known(ctx, node, 3, "axes")
    axes = _axes(range(int(ctx.value(node.input[1]).shape[0])) if axes is None else axes, rank)
    steps = _known(ctx, node, 4, "steps")
    steps = [1] * len(axes) if steps is None else [int(v) for v in steps]
    if any(st <= 0 for st in steps):
        raise ctx.unsupported(node, "run-time starts or ends with a negative step")
    dims = _dims(x)
    shape = mb.shape(x=x) if None in (dims[a] for a in axes) else None
    bounds = {}
    for which in (1, 2):
        given = ctx.const(node.input[which])
        given = ctx.var(node.input[which]) if given is None else np.asarray(given).astype(np.int64)
        for i, a in enumerate(axes):
            if isinstance(given, np.ndarray) and dims[a] is not None:  # this bound is known: numpy
                bounds[which, a] = np.int32([slice(int(given[i]), int(given[i])).indices(dims[a])[0]])
                continue
            dim = np.int32(dims[a]) if dims[a] is not None else mb.slice_by_index(x=shape, begin=[a], end=[a + 1])
            # a constant bound over a run-time dim: huge ONNX bounds (INT64_MAX) kept clear of int32 overflow
            v = np.int32(np.clip(given[i:i + 1], -(2**30), 2**30)) if isinstance(given, np.ndarray) else \
                mb.cast(x=mb.slice_by_index(x=given, begin=[i], end=[i + 1]), dtype="int32")
            v = mb.select(cond=mb.less(x=v, y=np.int32(0)), a=mb.add(x=v, y=dim), b=v)
            bounds[which, a] = mb.minimum(x=mb.maximum(x=v, y=np.int32(0)), y=dim)
    zero = np.zeros(1, np.int32)
    begin = mb.concat(values=[bounds.get((1, a), zero) for a in range(rank)], axis=0)
    end = mb.concat(values=[bounds.get((2, a), zero) for a in range(rank)], axis=0)
    stride = np.ones(rank, np.int32)
    for a, st in zip(axes, steps, strict=True):
        stride[a] = st
    sliced = [a in axes for a in range(rank)]
    _out(ctx, node, mb.slice_by_index(x=x, begin=begin, end=end, stride=stride, begin_mask=[not m for m in sliced],
                                      end_mask=[not m for m in sliced], name=ctx.name(node)))


def _positive_indices(ctx, node, x, axis: int):
    """ONNX indices may be negative; iOS17's gather treats negatives as out of bounds, so they are
    wrapped here: in numpy when the indices and the dim are known, else with a select at run time
    (against the dim read from the input's shape when it is a run-time dim)."""
    indices = ctx.const(node.input[1])
    dim = _dims(x)[axis]
    if indices is not None and (dim is not None or not (indices < 0).any()):
        return np.where(indices < 0, indices + (dim or 0), indices).astype(np.int32)
    idx = ctx.var(node.input[1])
    size = np.int32(dim) if dim is not None else mb.gather(x=mb.shape(x=x), indices=np.int32(axis), axis=0)
    return mb.select(cond=mb.less(x=idx, y=np.int32(0)), a=mb.add(x=idx, y=size), b=idx)


@register("Gather")
def gather(ctx, node):
    data, indices = _np(ctx, node.input[0]), _np(ctx, node.input[1])
    axis = attrs(node).get("axis", 0)
    if data is not None and indices is not None:
        return _out(ctx, node, np.asarray(np.take(data, indices, axis=axis)))
    x = ctx.var(node.input[0])
    axis = _axes([axis], len(x.shape))[0]
    indices = _positive_indices(ctx, node, x, axis)
    _out(ctx, node, _on_numbers(ctx, node, x, lambda v, **name: mb.gather(x=v, indices=indices, axis=axis, **name)))


def _on_numbers(ctx, node, x, op):
    """MIL's gathers take numbers only: a bool tensor (an attention mask) goes through as int32."""
    if isinstance(x, np.ndarray) or x.dtype != types.bool:
        return op(x, name=ctx.name(node))
    return mb.cast(x=op(mb.cast(x=x, dtype="int32")), dtype="bool", name=ctx.name(node))


@register("GatherElements")
def gather_elements(ctx, node):
    data, indices = _np(ctx, node.input[0]), _np(ctx, node.input[1])
    axis = attrs(node).get("axis", 0)
    if data is not None and indices is not None:
        return _out(ctx, node, np.take_along_axis(data, indices, axis=axis))
    x = ctx.var(node.input[0])
    axis = _axes([axis], len(x.shape))[0]
    indices = _positive_indices(ctx, node, x, axis)
    _out(ctx, node, _on_numbers(ctx, node, x, lambda v, **name: mb.gather_along_axis(x=v, indices=indices, axis=axis,
                                                                                     **name)))


# broadcasting and repetition -------------------------------------------------------------------
@register("Expand", since=8)
def expand(ctx, node):
    """ONNX broadcasts the input against `shape`. With a known shape and static dims that is a tile
    of the size-1 dims; otherwise (a run-time shape, or a run-time dim that may be 1) it is MIL's
    own broadcasting: x + zeros(shape)."""
    shape, data = ctx.const(node.input[1]), _np(ctx, node.input[0])
    if data is not None and shape is not None:
        return _out(ctx, node, np.broadcast_to(data, np.broadcast_shapes(data.shape, shape)).copy())
    x = ctx.var(node.input[0])
    reps = None if shape is None else _tile_reps(_dims(x), [int(s) for s in shape])
    if reps is None:  # MIL's add takes numbers only: a bool mask goes through as int32 (`_on_numbers`)
        def broadcast(v, **name):
            return mb.add(x=v, y=mb.fill(shape=ctx.var(node.input[1]), value=np.zeros((), _np_dtype(v))), **name)

        return _out(ctx, node, _on_numbers(ctx, node, x, broadcast))
    if len(reps) > len(x.shape):
        x = mb.expand_dims(x=x, axes=list(range(len(reps) - len(x.shape))))
    _out(ctx, node, mb.tile(x=x, reps=np.int32(reps), name=ctx.name(node)))


def _tile_reps(dims, shape) -> list[int] | None:
    """Repeats per output dim for Expand, or None when a run-time dim faces a target above 1."""
    rank = max(len(dims), len(shape))
    dims, shape = [1] * (rank - len(dims)) + dims, [1] * (rank - len(shape)) + shape
    if any(d is None and s > 1 for d, s in zip(dims, shape, strict=True)):
        return None
    return [s if d == 1 else 1 for d, s in zip(dims, shape, strict=True)]


@register("Tile", since=6)
def tile(ctx, node):
    data, repeats = _np(ctx, node.input[0]), ctx.const(node.input[1])
    if data is not None and repeats is not None:
        return _out(ctx, node, np.tile(data, repeats))
    _out(ctx, node, mb.tile(x=ctx.var(node.input[0]), reps=ctx.var(node.input[1]), name=ctx.name(node)))


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}


def _pad(ctx, node, pads, value, axes):
    x = ctx.value(node.input[0])
    rank, mode = len(x.shape), attrs(node).get("mode", "constant")
    axes = _axes(range(rank) if axes is None else axes, rank)
    n = len(axes)
    pairs = [[0, 0] for _ in range(rank)]
    for i, a in enumerate(axes):
        pairs[a] = [int(pads[i]), int(pads[i + n])]
    value = 0 if value is None or np.asarray(value).size == 0 else np.asarray(value).item()
    if isinstance(x, np.ndarray) and min(min(p) for p in pairs) >= 0:
        kwargs = {"constant_values": value} if mode == "constant" else {}
        return _out(ctx, node, np.pad(x, pairs, mode=mode, **kwargs))
    if mode not in (*_PAD_MODES, "wrap"):
        raise ctx.unsupported(node, f"pad mode {mode}")
    if min(min(p) for p in pairs) < 0:  # negative pads crop: pad the rest, then slice the crop away
        grown = _pad_pairs(ctx, node, ctx.var(node.input[0]), [[max(b, 0), max(e, 0)] for b, e in pairs], mode, value)
        return _out(ctx, node, _crop(ctx, node, grown, [[max(-b, 0), max(-e, 0)] for b, e in pairs]))
    _out(ctx, node, _pad_pairs(ctx, node, ctx.var(node.input[0]), pairs, mode, value, name=ctx.name(node)))


def _crop(ctx, node, x, crops):
    dims = _dims(x)
    if any(d is None and e for d, (_, e) in zip(dims, crops, strict=True)):
        raise ctx.unsupported(node, "negative end pads on a run-time dim")
    end = [0 if e == 0 else d - e for d, (_, e) in zip(dims, crops, strict=True)]
    return mb.slice_by_index(x=x, begin=np.int32([b for b, _ in crops]), end=np.int32(end),
                             end_mask=[e == 0 for _, e in crops], name=ctx.name(node))


def _pad_pairs(ctx, node, var, pairs, mode: str, value, name: str | None = None):
    """`var` padded by (begin, end) per dim. wrap is circular: slices of the other end, concatenated."""
    named = {"name": name} if name else {}
    if mode == "wrap":
        for axis, (b, e) in enumerate(pairs):
            if not b and not e:
                continue
            n = _dims(var)[axis]
            if n is None or b > n or e > n:
                raise ctx.unsupported(node, "wrap padding needs static sizes no smaller than the pads")
            parts = [_axis_slice(var, axis, n - b, n)] if b else []
            parts += [var] + ([_axis_slice(var, axis, 0, e)] if e else [])
            var = mb.concat(values=parts, axis=axis)
        return mb.identity(x=var, **named) if name else var
    while pairs and pairs[0] == [0, 0]:  # MIL pads trailing dims; fewer keeps reflect/replicate legal
        pairs.pop(0)
    if not pairs:
        return mb.identity(x=var, **named) if name else var
    fill = np.float16(value) if var.dtype == types.fp16 else np.float32(value)  # MIL wants x's dtype
    return mb.pad(x=var, pad=np.int32(pairs).reshape(-1), mode=_PAD_MODES[mode], constant_val=fill, **named)


def _axis_slice(x, axis: int, start: int, end: int):
    rank = len(x.shape)
    begin, stop = [0] * rank, [0] * rank
    begin[axis], stop[axis] = start, end
    return mb.slice_by_index(x=x, begin=np.int32(begin), end=np.int32(stop),
                             begin_mask=[i != axis for i in range(rank)], end_mask=[i != axis for i in range(rank)])


@register("Pad", since=1)
def pad_v1(ctx, node):
    a = attrs(node)
    _pad(ctx, node, a.get("pads", a.get("paddings")), a.get("value", 0.0), None)


@register("Pad", since=11)
def pad_v11(ctx, node):
    _pad(ctx, node, _known(ctx, node, 1, "pads"), _known(ctx, node, 2, "constant_value"),
         _known(ctx, node, 3, "axes"))


# shape queries and generators ------------------------------------------------------------------
@register("Shape")
def shape(ctx, node):
    """Folds to an int64 constant whenever the dims are static, so shape arithmetic never reaches
    MIL; only run-time dims produce a MIL shape op."""
    x = ctx.value(node.input[0])
    a = attrs(node)
    rank = len(x.shape)
    start, end = slice(a.get("start", 0), a.get("end", rank)).indices(rank)[:2]
    dims = _dims(x)[start:end]
    if None not in dims:
        return _out(ctx, node, np.asarray(dims, np.int64))
    if (start, end) == (0, rank):
        return _out(ctx, node, mb.shape(x=x, name=ctx.name(node)))
    _out(ctx, node, mb.slice_by_index(x=mb.shape(x=x), begin=np.int32([start]), end=np.int32([end]),
                                      name=ctx.name(node)))


@register("Size")
def size(ctx, node):
    x = ctx.value(node.input[0])
    dims = _dims(x)
    if None not in dims:
        return _out(ctx, node, np.asarray(int(np.prod(dims)), np.int64))
    _out(ctx, node, mb.reduce_prod(x=mb.shape(x=x), keep_dims=False, name=ctx.name(node)))


@register("ConstantOfShape", since=9)
def constant_of_shape(ctx, node):
    value = attrs(node).get("value")
    value = np.zeros(1, np.float32) if value is None else _tensor(value)
    shape = ctx.const(node.input[0])
    if shape is not None:
        return _out(ctx, node, np.full([int(s) for s in shape], value.reshape(-1)[0], value.dtype))
    narrow = {np.dtype(np.int64): np.int32, np.dtype(np.float64): np.float32}.get(value.dtype, value.dtype)
    _out(ctx, node, mb.fill(shape=ctx.var(node.input[0]), value=value.reshape(-1)[0].astype(narrow),
                            name=ctx.name(node)))


def _tensor(proto) -> np.ndarray:
    from onnx import numpy_helper

    return numpy_helper.to_array(proto)


@register("Range", since=11)
def range_(ctx, node):
    start, limit, delta = (ctx.const(n) for n in node.input[:3])
    if start is not None and limit is not None and delta is not None:
        return _out(ctx, node, np.arange(start, limit, delta, dtype=np.asarray(start).dtype))
    start, limit, delta = (ctx.var(n) for n in node.input[:3])
    _out(ctx, node, mb.range_1d(start=start, end=limit, step=delta, name=ctx.name(node)))


@register("Trilu", since=14)
def trilu(ctx, node):
    """Keep the upper (j - i >= k) or lower (j - i <= k) triangle of the last two dims, zero the
    rest: a constant mask when those dims are static, MIL's band_part for k = 0 otherwise."""
    upper = bool(attrs(node).get("upper", 1))
    k = _known(ctx, node, 1, "k")
    k = 0 if k is None else int(np.asarray(k).reshape(-1)[0])
    x = ctx.value(node.input[0])
    rows, cols = _dims(x)[-2:] if not isinstance(x, np.ndarray) else x.shape[-2:]
    if rows is not None and cols is not None:
        offset = np.arange(cols)[None, :] - np.arange(rows)[:, None]  # j - i
        keep = offset >= k if upper else offset <= k
        if isinstance(x, np.ndarray):
            return _out(ctx, node, np.where(keep, x, np.zeros_like(x)))
        return _out(ctx, node, mb.select(cond=keep, a=x, b=np.zeros((), _np_dtype(x)), name=ctx.name(node)))
    if k != 0:
        raise ctx.unsupported(node, "k other than 0 over run-time dims")
    _out(ctx, node, mb.band_part(x=x, lower=np.int32(0 if upper else -1), upper=np.int32(-1 if upper else 0),
                                 name=ctx.name(node)))


# pass-throughs ---------------------------------------------------------------------------------
@register("Identity")
def identity(ctx, node):
    _out(ctx, node, ctx.value(node.input[0]))


@register("Dropout")
def dropout(ctx, node):
    """Inference: the output is the input and the mask is all true (exact when the shape is static)."""
    training = _known(ctx, node, 2, "training_mode")
    if training is not None and bool(training):
        raise ctx.unsupported(node, "training_mode=True")
    x = ctx.value(node.input[0])
    _out(ctx, node, x)
    if len(node.output) > 1 and node.output[1]:
        if None in _dims(x):
            raise ctx.unsupported(node, "the mask output of a run-time shape")
        ctx.set(node.output[1], np.ones(x.shape, bool))


# depth <-> space ------------------------------------------------------------------------------
def _depth_to_space_np(x: np.ndarray, b: int, mode: str) -> np.ndarray:
    n, c, h, w = x.shape
    if mode == "DCR":
        y = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    else:
        y = x.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
    return y.reshape(n, c // (b * b), h * b, w * b)


@register("DepthToSpace")
def depth_to_space(ctx, node):
    """DCR is TensorFlow's order (MIL depth_to_space); CRD is PyTorch's PixelShuffle (MIL pixel_shuffle)."""
    a = attrs(node)
    b, mode = a["blocksize"], a.get("mode", "DCR")
    data = _np(ctx, node.input[0])
    if data is not None:
        return _out(ctx, node, _depth_to_space_np(data, b, mode))
    x = ctx.var(node.input[0])
    if mode == "DCR":
        return _out(ctx, node, mb.depth_to_space(x=x, block_size=b, name=ctx.name(node)))
    _out(ctx, node, mb.pixel_shuffle(x=x, upscale_factor=b, name=ctx.name(node)))


@register("SpaceToDepth")
def space_to_depth(ctx, node):
    b = attrs(node)["blocksize"]
    data = _np(ctx, node.input[0])
    if data is not None:
        n, c, h, w = data.shape
        y = data.reshape(n, c, h // b, b, w // b, b).transpose(0, 3, 5, 1, 2, 4)
        return _out(ctx, node, y.reshape(n, c * b * b, h // b, w // b))
    _out(ctx, node, mb.space_to_depth(x=ctx.var(node.input[0]), block_size=b, name=ctx.name(node)))


@register("NonZero", since=9)
def non_zero(ctx, node):
    """MIL lists one row per nonzero element; ONNX one row per axis."""
    data = _np(ctx, node.input[0])
    if data is not None:
        return _out(ctx, node, np.asarray(np.nonzero(data), np.int64).reshape(data.ndim, -1))
    rows = mb.non_zero(x=ctx.var(node.input[0]))
    _out(ctx, node, mb.transpose(x=rows, perm=[1, 0], name=ctx.name(node)))
