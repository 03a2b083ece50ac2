"""ONNX rewrites the TFLite lane runs on the hub graph before onnx2tf, for what onnx2tf lowers wrongly.

onnx2tf can be wrong without failing, so every pass here re-expresses one pattern with ops it lowers
correctly and ships with a fixture (tests/converters/tflite/test_rewrites.py) showing onnx2tf's
TFLite missing onnxruntime (or refusing the graph) on the original and matching it on the rewritten
one. Measured with onnx2tf 2.6.9's flatbuffer_direct backend: when an upgrade fixes a pattern, its
`test_onnx2tf_still_gets_it_wrong` case fails and the pass can go. Moving from onnx2tf 1.29 to 2.6.9
retired `expand-broadcast-constants` (2.x broadcasts constants right where C equals H or W) and the
pooling half of `explicit-auto-pad` (2.x sizes SAME_LOWER and count_include_pad pools right).

Not here on purpose: AveragePool with ceil_mode=1 and count_include_pad=1. onnx2tf follows the ONNX
spec and PyTorch there (the overhanging last window divides by its in-bounds size); onnxruntime's
kernel before opset 19 divides by the full kernel, so it is the reference that is off, and the hub
rewrites it for every lane (converters/onnx/passes.py).

Passes keep what onnxruntime computes, touch only top-level nodes whose input shape is static where
they need it, and edit the model in place.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from bridge.base.inference import infer
from bridge.base.lazy import require
from bridge.converters.onnx.graph import (
    PassRegistry,
    Window,
    del_attr,
    fresh_name,
    get_attr,
    set_attr,
    spatial_shapes,
    tensor_types,
)
from bridge.converters.onnx.graph import window as window_of

if TYPE_CHECKING:
    import onnx

_REGISTRY = PassRegistry("rewrite")
rewrite = _REGISTRY.register

PIPELINE: tuple[str, ...] = (
    "explicit-auto-pad",  # first: it turns SAME LpPools into the padded form the next pass handles
    "lppool-explicit-pad",
    "maxpool-dilations",
    "einsum-as-matmul",  # independent of the passes above: none of them reads what it writes
    "elu-as-selu",
    "gru-named-outputs",
    "explicit-default-axis",
    "gelu-tanh-as-formula",
)


def apply_rewrites(model: onnx.ModelProto, passes: Iterable[str] = PIPELINE) -> list[str]:
    """Run `passes` in order on `model` in place; returns e.g. `["maxpool-dilations x2"]` for the
    passes that changed something, for the artifact's warnings."""
    return _REGISTRY.apply(model, passes)


# --- passes -----------------------------------------------------------------------------------------


@rewrite("explicit-auto-pad")
def explicit_auto_pad(model: onnx.ModelProto) -> int:
    """auto_pad spelled out as explicit pads where onnx2tf gets the auto_pad form wrong:
    - Conv SAME_LOWER: refused ("Conv auto_pad=SAME_LOWER is not supported in flatbuffer_direct");
    - LpPool SAME_UPPER and SAME_LOWER: lowered as SAME average pooling times the kernel size, which
      divides border windows by their in-bounds count (rel. L2 0.07 and 0.04 on onnx's node tests).
      Explicit pads then become a zero Pad (`lppool-explicit-pad`, next in the pipeline)."""
    candidates = [n for n in model.graph.node
                  if (n.op_type == "Conv" and _auto_pad(n) == "SAME_LOWER")
                  or (n.op_type == "LpPool" and _auto_pad(n) in ("SAME_UPPER", "SAME_LOWER"))]
    if not candidates:
        return 0
    shapes = spatial_shapes(model)
    count = 0
    for node in candidates:
        window = window_of(node, shapes)
        pads = _same_pads(window, lower=_auto_pad(node) == "SAME_LOWER") if window else None
        if pads is None or (node.op_type == "LpPool" and get_attr(node, "ceil_mode", 0)):
            continue  # spatial dims not static, or onnxruntime shifts windows inward: no one meaning to keep
        del_attr(node, "auto_pad")
        set_attr(node, "pads", [*pads[0], *pads[1]])
        count += 1
    return count


@rewrite("lppool-explicit-pad")
def lppool_explicit_pad(model: onnx.ModelProto) -> int:
    """LpPool's padding as a separate zero Pad.

    When the pads equal TensorFlow's SAME pads, onnx2tf lowers LpPool as SAME average pooling times
    the kernel size, but SAME averaging divides by the in-bounds count, so border outputs come out
    too large (rel. L2 0.15). Any other pads onnx2tf already turns into a zero Pad, exactly as here,
    so rewriting every padded LpPool changes nothing for those and spares us mirroring onnx2tf's
    SAME test. Zeros add nothing to a sum of |x|^p, so the padded form computes the same.
    """
    candidates = [n for n in model.graph.node if n.op_type == "LpPool" and _auto_pad(n) == "NOTSET"
                  and any(get_attr(n, "pads", []))]
    if not candidates:
        return 0
    shapes = spatial_shapes(model)
    count = 0
    for node in candidates:
        window = window_of(node, shapes)
        if window is None or not _pad_keeps_shape(window, get_attr(node, "ceil_mode", 0)):
            continue
        _insert_zero_pad(model, node, window.begin, window.end)
        del_attr(node, "pads")
        count += 1
    return count


@rewrite("maxpool-dilations")
def maxpool_dilations(model: onnx.ModelProto) -> int:
    """Dilated MaxPool as Gathers and Max, one spatial axis at a time.

    onnx2tf lowers a dilated MaxPool to TensorFlow's Dilation2D, which the TFLite converter rejects
    (not a builtin op). Max pooling is separable: the max over a window is the max over its rows of
    the max over its columns, and every tap is a Gather with constant indices. Taps that fall in the
    padding gather another tap of the same window instead, which leaves the max unchanged and needs
    no -inf padding value (that would wreck int8 calibration ranges).
    """
    candidates = [n for n in model.graph.node if n.op_type == "MaxPool" and len(n.output) == 1
                  and any(d > 1 for d in get_attr(n, "dilations", []))]
    if not candidates:
        return 0
    shapes = spatial_shapes(model)
    count = 0
    for node in candidates:
        window = window_of(node, shapes)
        if window is None or _auto_pad(node) not in ("NOTSET", "VALID"):
            continue
        taps = [_axis_taps(window, axis, get_attr(node, "ceil_mode", 0)) for axis in range(len(window.size))]
        if any(t is None for t in taps):
            continue
        _replace_with_gather_max(model, node, taps)
        count += 1
    return count


@rewrite("elu-as-selu")
def elu_as_selu(model: onnx.ModelProto) -> int:
    """Elu with alpha other than 1 as Selu with gamma 1, the same function.

    onnx2tf lowers Elu to TFLite's ELU builtin, which has no alpha: alpha 2 came out at rel. L2 0.36,
    silently. Selu(x; alpha, gamma=1) is alpha * (exp(x) - 1) below 0 and x above, exactly Elu, and
    onnx2tf lowers Selu with its alpha."""
    count = 0
    for node in model.graph.node:
        if node.op_type != "Elu" or get_attr(node, "alpha", 1.0) == 1.0:
            continue
        node.op_type = "Selu"
        set_attr(node, "gamma", 1.0)
        count += 1
    return count


@rewrite("gru-named-outputs")
def gru_named_outputs(model: onnx.ModelProto) -> int:
    """GRU with an omitted output ("") before one the graph uses: the omitted one named (and left
    unused). onnx2tf 2.6.9 places a GRU's outputs by position: one yielding only Y_h came out as a
    file XNNPACK cannot size ("failed to reshape"); named, it converts right (onnx's node test
    test_gru_seq_length). LSTM and RNN are refused by the preflight (their files keep state)."""
    count = 0
    for node in model.graph.node:
        if node.op_type != "GRU" or node.domain not in ("", "ai.onnx"):
            continue
        used = [i for i, name in enumerate(node.output) if name]
        omitted = [i for i in range(used[-1]) if not node.output[i]] if used else []
        for i in omitted:
            node.output[i] = fresh_name(model, f"{node.name or 'gru'}_unused_{i}")
        count += bool(omitted)
    return count


@rewrite("explicit-default-axis")
def explicit_default_axis(model: onnx.ModelProto) -> int:
    """Hardmax without an `axis` attribute, from opset 13 on, as Hardmax with axis=-1 (its default).

    onnx2tf takes the missing axis as 1, the default before opset 13: on a [3, 4, 5] input the
    output came out at rel. L2 1.08, silently."""
    from bridge.converters.onnx.hub import opset_of

    if opset_of(model) < 13:
        return 0
    count = 0
    for node in model.graph.node:
        if node.op_type == "Hardmax" and node.domain in ("", "ai.onnx") and get_attr(node, "axis", None) is None:
            set_attr(node, "axis", -1)
            count += 1
    return count


@rewrite("gelu-tanh-as-formula")
def gelu_tanh_as_formula(model: onnx.ModelProto) -> int:
    """Gelu(approximate="tanh") (opset 20) written out: 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))).

    onnx2tf lowers it to TFLite's GELU builtin in its approximate form, whose kernel approximates
    again (rel. L2 1.9e-4 on inputs up to 3, over the fp32 bar of 1e-4). The formula lowers to
    builtins (MUL, ADD, TANH), as torch's own tanh-GELU export does."""
    count = 0
    for node in list(model.graph.node):
        approximate = get_attr(node, "approximate", b"none")
        approximate = approximate.decode() if isinstance(approximate, bytes) else approximate
        if node.op_type != "Gelu" or approximate != "tanh":
            continue
        _insert_before(model, node, _gelu_tanh_nodes(model, node))
        model.graph.node.remove(node)
        count += 1
    return count


def _gelu_tanh_nodes(model, node) -> list:
    """The nodes computing `node`'s tanh GELU from primitives, the last writing its output."""
    onnx = require("onnx")
    base = node.name or "gelu"
    x, y = node.input[0], node.output[0]
    numpy_type = onnx.helper.tensor_dtype_to_np_dtype(tensor_types(model).get(x, (1, ()))[0])
    nodes = []

    def const(value: float, suffix: str) -> str:
        name = fresh_name(model, f"{base}_{suffix}")
        model.graph.initializer.append(onnx.numpy_helper.from_array(np.array(value, numpy_type), name))
        return name

    def op(kind: str, inputs: list[str], suffix: str | None) -> str:
        out = y if suffix is None else fresh_name(model, f"{base}_{suffix}")
        nodes.append(onnx.helper.make_node(kind, inputs, [out], name=out if suffix else base))
        return out

    cube = op("Mul", [op("Mul", [x, x], "square"), x], "cube")
    inner = op("Add", [x, op("Mul", [cube, const(0.044715, "k")], "k_cube")], "inner")
    t = op("Tanh", [op("Mul", [inner, const(math.sqrt(2 / math.pi), "c")], "scaled")], "tanh")
    op("Mul", [op("Mul", [x, const(0.5, "half")], "half_x"), op("Add", [t, const(1.0, "one")], "one_plus")], None)
    return nodes


@rewrite("einsum-as-matmul")
def einsum_as_matmul(model: onnx.ModelProto) -> int:
    """Two-operand Einsums that are one (batched) matrix product, as MatMul with the Transposes,
    Unsqueezes and Squeeze that order its operands and output, when a dim of an operand of rank 3
    or more is dynamic.

    onnx2tf holds 3-D and higher tensors channel-last. For Einsum it finds each operand's order by
    trying every transposition against its own onnxruntime run, but only when both shapes are
    static; otherwise it hands the equation to tf.einsum as written, on the channel-last tensors.
    Measured on [2, T, 7] graph inputs (T dynamic): `bij,bjk->bik`, `bij,bj->bi` and
    `bik,bjk->bij` give TFLite files the runtime cannot size; `bij,jk->bik` gives [2, 7, 3] for
    [2, T, 3], `bij,bkj->bik` with a dynamic batch [N, 7, 7] for [N, 5, 5], and attention
    (`bhqd,bhkd->bhqk` then `bhqk,bhkd->bhqd`, either head layout) the wrong shape as well. With
    both operands graph inputs, a dynamic batch or `bhqk,bhkd->bhqd` crash onnx2tf itself.

    Its MatMul lowers the same products right, given two things the rewritten graph supplies:
    every operand of rank 3 or more goes through a Transpose, even an identity one (onnx2tf lowers
    Transpose exactly from its channel-last tensors, so MatMul gets its operands in ONNX order
    instead of guessing the order from all-ones dummy data with dynamic dims at 1, which went
    wrong for `bij,bj->bi`), and every new tensor is typed (`_declare`).

    Left alone: static shapes (onnx2tf gets the equations torch exports right: `bij,bjk->bik`,
    `bhqd,bhkd->bhqk`, `bhqk,bhkd->bhqd`, `bij,jk->bik`; where the last two dims of a 3-D graph
    input are equal it gets them wrong, but MatMul just as wrong, so this pass cannot help), and
    2-D operands only (never transposed, so tf.einsum reads them right). Where onnx2tf holds the
    operands in ONNX order (after a Reshape, as in most attention blocks) it lowers the Einsum right
    even when dynamic; the graph does not say which order it holds, so those are rewritten too.
    """
    candidates = [n for n in model.graph.node if n.op_type == "Einsum" and len(n.input) == 2]
    if not candidates:
        return 0
    types = tensor_types(model)
    types.update({t.name: (t.data_type, tuple(t.dims)) for t in model.graph.initializer})
    count, written = 0, []
    for node in candidates:
        equation = get_attr(node, "equation", b"")
        form = _matmul_form(equation.decode() if isinstance(equation, bytes) else equation)
        operands = [types.get(name) for name in node.input]
        if form is None or None in operands or any(t[0] not in _MATMUL_TYPES for t in operands):
            continue
        shapes = [shape for _, shape in (reversed(operands) if form.swap else operands)]
        if [len(s) for s in shapes] != [len(form.a), len(form.b)] or max(map(len, shapes)) < 3 \
                or all(None not in s for s in shapes):
            continue  # static or all 2-D: onnx2tf lowers the Einsum right (see the docstring)
        written += _replace_with_matmul(model, node, form)
        count += 1
    _declare(model, written)
    return count


_MATMUL_TYPES = (1, 6, 7, 10, 11, 12, 13, 16)  # float, int32, int64, float16, double, uint32, uint64, bfloat16


@dataclass(frozen=True)
class _MatmulForm:
    """An Einsum equation as MatMul: each operand's Transpose and Unsqueeze (axes for broadcast or
    missing row/column dims), then the Squeeze and Transpose that give the equation's output."""

    a: str  # the MatMul's operands' subscripts
    b: str
    swap: bool  # whether a is the Einsum's second operand
    perm_a: tuple[int, ...]
    perm_b: tuple[int, ...]
    unsqueeze_a: tuple[int, ...]
    unsqueeze_b: tuple[int, ...]
    squeeze: tuple[int, ...]
    perm_out: tuple[int, ...]

    def extra_nodes(self) -> int:
        """Nodes `_replace_with_matmul` writes besides the MatMul."""
        return _transposes(self.perm_a) + _transposes(self.perm_b) + (self.perm_out != _identity(self.perm_out)) \
            + bool(self.unsqueeze_a) + bool(self.unsqueeze_b) + bool(self.squeeze)


def _matmul_form(equation: str) -> _MatmulForm | None:
    """The equation as one MatMul, operands in the order that needs the fewest extra nodes."""
    forms = [f for f in (_operands_matmul_form(equation, swap) for swap in (False, True)) if f]
    return min(forms, key=_MatmulForm.extra_nodes) if forms else None


def _operands_matmul_form(equation: str, swap: bool) -> _MatmulForm | None:
    """The equation as one MatMul, or None unless it is one: two operands, an explicit output, no
    ellipsis, no index repeated within a term, exactly one index summed over (in both operands,
    not in the output) and every other index in the output.

    MatMul's shape is [batch..., m, k] @ [batch..., k, n]. Indices in both operands and the output
    are batch dims; those of one operand and the output are its rows (a) or columns (b): the last
    of them in output order is m (n), the others become batch dims the other operand broadcasts
    along (an Unsqueezed 1, left out where it would lead). An operand without such index gets a
    1 as m (n), squeezed away after the MatMul.
    """
    terms = equation.replace(" ", "")
    if terms.count("->") != 1:
        return None
    inputs, out = terms.split("->")
    operands = inputs.split(",")
    if len(operands) != 2 or not all(t.isascii() and t.isalpha() for t in [*operands, out] if t):
        return None
    a, b = reversed(operands) if swap else operands
    if any(len(set(t)) != len(t) for t in (a, b, out)) or not set(out) <= set(a + b):
        return None
    summed = [i for i in a if i in b and i not in out]
    if len(summed) != 1 or any(i not in out and i not in summed for i in a + b):
        return None
    batch = [i for i in out if i in a and i in b]
    rows, cols = [i for i in out if i not in b], [i for i in out if i not in a]
    # MatMul's broadcast dims, None where the operand gets a 1; leading 1s broadcast by themselves
    batch_a = _strip_leading_none([*batch, *rows[:-1], *[None] * len(cols[:-1])])
    batch_b = _strip_leading_none([*batch, *[None] * len(rows[:-1]), *cols[:-1]])
    full_a = [*batch_a, rows[-1] if rows else None, summed[0]]
    full_b = [*batch_b, summed[0], cols[-1] if cols else None]
    product = [*batch, *rows[:-1], *cols[:-1], rows[-1] if rows else None, cols[-1] if cols else None]
    kept = [i for i in product if i is not None]
    return _MatmulForm(
        a, b, swap,
        perm_a=tuple(a.index(i) for i in full_a if i is not None),
        perm_b=tuple(b.index(i) for i in full_b if i is not None),
        unsqueeze_a=tuple(k for k, i in enumerate(full_a) if i is None),
        unsqueeze_b=tuple(k for k, i in enumerate(full_b) if i is None),
        squeeze=tuple(k for k, i in enumerate(product) if i is None),
        perm_out=tuple(kept.index(i) for i in out))


def _transposes(perm: tuple[int, ...]) -> bool:
    """Whether an operand goes through a Transpose: where it must, and always from rank 3 up
    (see `einsum_as_matmul`)."""
    return len(perm) >= 3 or perm != _identity(perm)


def _identity(perm: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(range(len(perm)))


def _strip_leading_none(dims: list) -> list:
    while dims and dims[0] is None:
        dims = dims[1:]
    return dims


# --- pooling windows --------------------------------------------------------------------------------


def _same_pads(w: Window, lower: bool) -> tuple[list[int], list[int]] | None:
    """ONNX's SAME_UPPER/SAME_LOWER padding: output = ceil(input / stride), the odd pixel at the
    end (UPPER) or the beginning (LOWER).

    None where the spec's formula goes negative (kernel smaller than stride): onnxruntime then
    shifts the windows inward while TensorFlow pads nothing, so there is no one meaning to keep.
    """
    begin, end = [], []
    for n, k, s, d in zip(w.size, w.kernel, w.strides, w.dilations, strict=True):
        total = (math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n
        if total < 0:
            return None
        first = total - total // 2 if lower else total // 2
        begin.append(first)
        end.append(total - first)
    return begin, end


def _out_size(n: int, k: int, s: int, d: int, begin: int, end: int, ceil: int) -> int | None:
    """Output length along one axis; None where runtimes disagree on it, to leave such nodes alone.

    With ceil_mode, onnxruntime (like PyTorch) drops a last window that would start in the end
    padding, while ONNX shape inference keeps it; a window larger than the padded input is an error
    in some runtimes and an empty output in others.
    """
    span = n + begin + end - (k - 1) * d - 1
    if span < 0:
        return None
    out = (-(-span // s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= n + begin:
        return None
    return out


def _pad_keeps_shape(w: Window, ceil: int) -> bool:
    """Moving pads into a Pad node can change a ceil_mode output size (the dropped-window rule
    looks at the input's end, which moves); rewrite only where it does not."""
    return all(
        _out_size(n, k, s, d, b, e, ceil) == _out_size(n + b + e, k, s, d, 0, 0, ceil) is not None
        for n, k, s, d, b, e in zip(w.size, w.kernel, w.strides, w.dilations, w.begin, w.end, strict=True))


def _axis_taps(w: Window, axis: int, ceil: int) -> list[list[int]] | None:
    """For each kernel tap on `axis`, the input index each output reads; taps outside the input
    read the window's first in-bounds tap. None if some window has no in-bounds tap."""
    n, k, s, d = w.size[axis], w.kernel[axis], w.strides[axis], w.dilations[axis]
    begin = w.begin[axis]
    out = _out_size(n, k, s, d, begin, w.end[axis], ceil)
    if out is None:
        return None
    taps = [[0] * out for _ in range(k)]
    for o in range(out):
        inside = [o * s - begin + t * d for t in range(k) if 0 <= o * s - begin + t * d < n]
        if not inside:
            return None
        for t in range(k):
            i = o * s - begin + t * d
            taps[t][o] = i if 0 <= i < n else inside[0]
    return taps


# --- graph editing ----------------------------------------------------------------------------------


def _insert_zero_pad(model, node, begin: list[int], end: list[int]) -> None:
    """Put a constant-zero Pad in front of `node`'s first input (batch and channels unpadded)."""
    onnx = require("onnx")
    pads = fresh_name(model, f"{node.name or node.op_type}_pads")
    padded = fresh_name(model, f"{node.name or node.op_type}_padded")
    model.graph.initializer.append(
        onnx.numpy_helper.from_array(np.array([0, 0, *begin, 0, 0, *end], dtype=np.int64), pads))
    pad = onnx.helper.make_node("Pad", [node.input[0], pads], [padded], name=padded, mode="constant")
    _insert_before(model, node, [pad])
    node.input[0] = padded


def _replace_with_gather_max(model, node, taps: list[list[list[int]]]) -> None:
    """Replace `node` with, per spatial axis, one Gather per tap and a Max over them."""
    onnx = require("onnx")
    base = node.name or node.op_type
    current, new_nodes = node.input[0], []
    for axis, axis_taps in enumerate(taps):
        gathered = []
        for t, indices in enumerate(axis_taps):
            idx = fresh_name(model, f"{base}_axis{axis}_tap{t}_idx")
            model.graph.initializer.append(onnx.numpy_helper.from_array(np.array(indices, np.int64), idx))
            out = fresh_name(model, f"{base}_axis{axis}_tap{t}")
            new_nodes.append(onnx.helper.make_node("Gather", [current, idx], [out], name=out, axis=axis + 2))
            gathered.append(out)
        name = fresh_name(model, f"{base}_axis{axis}_max")
        current = node.output[0] if axis == len(taps) - 1 else name
        new_nodes.append(onnx.helper.make_node("Max", gathered, [current], name=name))
    _insert_before(model, node, new_nodes)
    model.graph.node.remove(node)


def _replace_with_matmul(model, node, form: _MatmulForm) -> list[str]:
    """Replace the Einsum `node` with `form`'s nodes, the last of them writing the Einsum's output;
    returns the tensors they add. The hub is opset 13 or newer, where Unsqueeze and Squeeze take
    their axes as an input."""
    onnx = require("onnx")
    base = node.name or node.op_type
    new_nodes = []

    def add(op: str, inputs: list[str], suffix: str, perm=(), axes=()) -> str:
        out = fresh_name(model, f"{base}_{suffix}")  # suffixes differ, so new names never clash
        if axes:
            inputs = [*inputs, fresh_name(model, f"{out}_axes")]
            model.graph.initializer.append(onnx.numpy_helper.from_array(np.array(axes, np.int64), inputs[-1]))
        attrs = {"perm": list(perm)} if perm else {}
        new_nodes.append(onnx.helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def operand(name: str, suffix: str, perm: tuple[int, ...], axes: tuple[int, ...]) -> str:
        if _transposes(perm):
            name = add("Transpose", [name], f"{suffix}_transposed", perm=perm)
        return add("Unsqueeze", [name], f"{suffix}_unsqueezed", axes=axes) if axes else name

    first, second = reversed(node.input) if form.swap else node.input
    y = add("MatMul", [operand(first, "a", form.perm_a, form.unsqueeze_a),
                       operand(second, "b", form.perm_b, form.unsqueeze_b)], "matmul")
    if form.squeeze:
        y = add("Squeeze", [y], "squeezed", axes=form.squeeze)
    if form.perm_out != _identity(form.perm_out):
        add("Transpose", [y], "output_transposed", perm=form.perm_out)
    new_nodes[-1].output[0] = node.output[0]
    _insert_before(model, node, new_nodes)
    model.graph.node.remove(node)
    return [n.output[0] for n in new_nodes[:-1]]


def _declare(model, names: list[str]) -> None:
    """Type and shape the new tensors `names` as shape inference sees them: hub graphs type their
    tensors, and onnx2tf guesses the layout of an untyped one (seen: a Squeeze after MatMul
    dropping the wrong axis)."""
    if names:
        inferred = infer(model).graph.value_info
        model.graph.value_info.extend(v for v in inferred if v.name in set(names))


def _insert_before(model, node, new_nodes: list) -> None:
    """Insert right before `node`, which keeps the graph topologically sorted."""
    nodes = model.graph.node
    at = list(nodes).index(node)
    for offset, new in enumerate(new_nodes):
        nodes.insert(at + offset, new)


def _auto_pad(node) -> str:
    value = get_attr(node, "auto_pad", b"NOTSET")
    return value.decode() if isinstance(value, bytes) else value


