"""Elementwise arithmetic, comparison, logic, casts, Clip, CumSum, TopK, ArgMax, Einsum.

Each group of ops is lowered three ways (see `harness.lowered_three_ways`): as MIL ops evaluated by MIL's
own value inference, as the numpy fold used for shape arithmetic, and with runtime inputs through
ct.convert; the first two compare values with onnxruntime, the last shapes.
"""

import numpy as np
import pytest
from onnx import TensorProto, helper

from bridge.base.errors import ConversionError
from tests.converters.coreml.harness import (
    assert_values,
    check,
    export_torch,
    graph,
    lower,
    lowered_three_ways,
    numeric,
    parity,
)
from tests.converters.coreml.harness import onnxruntime as onnxruntime_values

coremltools = pytest.importorskip("coremltools")
RNG = np.random.default_rng(0)


def _nodes(op_types, inputs, prefix="y"):
    return [helper.make_node(op, inputs, [f"{prefix}_{op}"]) for op in op_types], [f"{prefix}_{op}" for op in op_types]


def test_float_unary_and_binary(monkeypatch):
    unit = RNG.uniform(0.05, 0.95, (2, 3, 4)).astype(np.float32)
    signed = np.concatenate([RNG.uniform(-3, 3, 20), [0.5, 1.5, 2.5, -0.5, -2.5, 0.0]]).astype(np.float32)
    other = RNG.uniform(0.5, 2, (3, 1)).astype(np.float32)
    other[0, 0] = unit[0, 0, 0]  # an equal pair
    a, a_out = _nodes(["Sqrt", "Exp", "Log", "Reciprocal", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh",
                       "Cosh", "Atanh"], ["u"])
    b, b_out = _nodes(["Abs", "Neg", "Floor", "Ceil", "Round", "Sign", "Erf"], ["s"])
    binary = ["Add", "Sub", "Mul", "Div", "Pow", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"]
    c, c_out = _nodes(binary, ["u", "o"], prefix="bin")
    # torch exports x ** 2 as Pow(float, int64): MIL needs both operands in one dtype.
    pow_int = helper.make_node("Pow", ["s", "two"], ["squared"])
    program = lowered_three_ways(monkeypatch, [*a, *b, *c, pow_int], {"u": unit, "s": signed, "o": other},
                                 [*a_out, *b_out, *c_out, "squared"], initializers={"two": np.array(2, np.int64)},
                                 rtol=1e-5, atol=1e-5)
    emitted = {op.op_type for op in program.functions["main"].operations}
    assert {"real_div", "pow", "less_equal", "inverse", "erf"} <= emitted


def test_integer_arithmetic_truncates_like_onnx(monkeypatch):
    x = np.array([[7, -7, 6, -6, 0, 5]], np.int64)
    y = np.array([2, 2, -4, -4, 3, -5], np.int64)
    ops = ["Add", "Sub", "Mul", "Div", "Equal", "Less", "Greater", "Max", "Min"]
    nodes, outs = _nodes(ops, ["x", "y"])
    unary, unary_out = _nodes(["Abs", "Neg", "Sign"], ["x"])
    lowered_three_ways(monkeypatch, nodes + unary, {"x": x, "y": y}, outs + unary_out)


def test_logic_and_where(monkeypatch):
    p, q = np.array([[True, False, True]]), np.array([[True], [False]])
    x, y = RNG.standard_normal((2, 1)).astype(np.float32), RNG.standard_normal((2, 3)).astype(np.float32)
    ints = np.array([1, 2, 3], np.int64)
    nodes, outs = _nodes(["And", "Or", "Xor", "Equal"], ["p", "q"])
    # The last Where's condition is larger than both branches: MIL's select would take the branches' shape.
    nodes += [helper.make_node("Not", ["p"], ["n"]), helper.make_node("Where", ["q", "x", "y"], ["w"]),
              helper.make_node("Where", ["p", "i", "j"], ["wi"]), helper.make_node("Where", ["q", "i", "j"], ["wide"])]
    program = lowered_three_ways(monkeypatch, nodes, {"p": p, "q": q, "x": x, "y": y}, [*outs, "n", "w", "wi", "wide"],
                                 initializers={"i": ints, "j": -ints})
    assert "select" in {op.op_type for op in program.functions["main"].operations}


def test_variadic_one_two_three_inputs(monkeypatch):
    a, b, c = (RNG.standard_normal(s).astype(np.float32) for s in ((2, 3), (3,), (1, 3)))
    nodes, outs = [], []
    for op in ("Sum", "Max", "Min", "Mean"):
        for n, ins in ((1, ["a"]), (2, ["a", "b"]), (3, ["a", "b", "c"])):
            nodes.append(helper.make_node(op, ins, [f"{op}{n}"]))
            outs.append(f"{op}{n}")
    lowered_three_ways(monkeypatch, nodes, {"a": a, "b": b, "c": c}, outs)


def test_cast_and_cast_like(monkeypatch):
    x = np.array([[-2.7, -0.5, 0.0, 0.4, 3.9]], np.float32)
    targets = {"i64": TensorProto.INT64, "i32": TensorProto.INT32, "b": TensorProto.BOOL, "f16": TensorProto.FLOAT16,
               "f64": TensorProto.DOUBLE, "f32": TensorProto.FLOAT, "u8": TensorProto.UINT8}
    nodes = [helper.make_node("Cast", ["x"], [name], to=to) for name, to in targets.items() if name != "u8"]
    # uint8 goes back to int32 before the output: Core ML outputs cannot be uint8 (the numpy fold keeps ONNX's uint8).
    nodes += [helper.make_node("Abs", ["x"], ["abs"]), helper.make_node("Cast", ["abs"], ["u8"], to=TensorProto.UINT8),
              helper.make_node("Cast", ["u8"], ["u8i"], to=TensorProto.INT32),
              helper.make_node("Cast", ["b"], ["back"], to=TensorProto.FLOAT),
              helper.make_node("CastLike", ["x", "like"], ["cl"])]
    outs = [n for n in targets if n != "u8"] + ["u8i", "back", "cl"]
    lowered_three_ways(monkeypatch, nodes, {"x": x}, outs, initializers={"like": np.array([1], np.int64)})


def test_cast_to_string_is_refused():
    nodes = [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.STRING)]
    model = graph(nodes, {"x": np.zeros((2,), np.float32)}, [])
    model.graph.output.append(helper.make_tensor_value_info("y", TensorProto.STRING, [2]))
    with pytest.raises(ConversionError, match="Cast"):
        lower(model)


@pytest.mark.parametrize("opset", [6, 13])
def test_clip_bounds_as_attributes_and_inputs(monkeypatch, opset):
    x = RNG.uniform(-3, 3, (2, 6)).astype(np.float32)
    if opset < 11:
        nodes = [helper.make_node("Clip", ["x"], ["both"], min=-1.0, max=1.0),
                 helper.make_node("Clip", ["x"], ["lo"], min=0.0), helper.make_node("Clip", ["x"], ["none"])]
        outs, inits = ["both", "lo", "none"], {}
    else:
        nodes = [helper.make_node("Clip", ["x", "lo", "hi"], ["both"]),
                 helper.make_node("Clip", ["x", "", "hi"], ["hi_only"]),
                 helper.make_node("Clip", ["x", "hi", "lo"], ["crossed"]), helper.make_node("Clip", ["x"], ["none"]),
                 helper.make_node("Clip", ["i", "ilo", "ihi"], ["ints"])]
        outs = ["both", "hi_only", "crossed", "none", "ints"]
        inits = {"lo": np.array(-1, np.float32), "hi": np.array(1.5, np.float32), "i": np.arange(-4, 5, dtype=np.int64),
                 "ilo": np.array(-2, np.int64), "ihi": np.array(3, np.int64)}
    lowered_three_ways(monkeypatch, nodes, {"x": x}, outs, opset=opset, initializers=inits)


def test_pow_integer_base_float_exponent_truncates():
    """onnxruntime computes int ** float in float and truncates toward zero: 2 ** 0.5 is 1, 3 ** -0.3 is 0."""
    feed = {"y": np.array([0.5, -0.3, 2.0, 1.0, 1.9, 10.99], np.float32)}
    for dtype in (np.int32, np.int64):
        model = graph([helper.make_node("Pow", ["x", "y"], ["z"])], feed, ["z"],
                      {"x": np.array([2, 3, -2, -3, 5, 2], dtype)}, opset=15)
        parity(model, feed, expect_ops=("pow", "floor"), rtol=0, atol=0)


def test_isnan_isinf_acosh_asinh_mod():
    """Run by the reference executor: NaN and +-Inf among the data; asinh of large negative x
    (no cancellation); C's fmod (the dividend's sign) and the integer mod (the divisor's sign)."""
    x = np.array([[1.0, np.nan, np.inf, -np.inf, -0.0, 3.5], [-7.5, 2.0, 1e4, -1e4, 0.25, np.nan]], np.float32)
    feed = {"x": x, "a": np.array([1.0, 1.5, 4.0, 100.0], np.float32),
            "f": np.array([-4.3, 7.2, 5.0, -0.5, -7.0], np.float32),
            "g": np.array([2.1, -3.4, 5.0, 2.0, 3.0], np.float32),
            "i": np.array([-4, 7, 5, -1, -7], np.int32), "j": np.array([3, -3, 2, 2, -4], np.int32)}
    nodes = [helper.make_node("IsNaN", ["x"], ["nan"]), helper.make_node("IsInf", ["x"], ["inf"]),
             helper.make_node("IsInf", ["x"], ["pos"], detect_negative=0),
             helper.make_node("IsInf", ["x"], ["neg"], detect_positive=0),
             helper.make_node("Acosh", ["a"], ["acosh"]), helper.make_node("Asinh", ["x"], ["asinh"]),
             helper.make_node("Mod", ["f", "g"], ["fmod"], fmod=1), helper.make_node("Mod", ["i", "j"], ["imod"]),
             helper.make_node("Mod", ["i", "j"], ["ifmod"], fmod=1)]
    outputs = [n.output[0] for n in nodes]
    parity(graph(nodes, feed, outputs, opset=20), feed, expect_ops=("not_equal", "mod"), rtol=1e-5, atol=1e-6)


def test_clip_with_runtime_bounds():
    """Bounds computed at run time (Core ML has no rank-0 inputs, so they come from reductions)."""
    feed = {"x": RNG.standard_normal((3, 4)).astype(np.float32), "b": RNG.standard_normal((2,)).astype(np.float32)}
    nodes = [helper.make_node("ReduceMin", ["b"], ["lo"], keepdims=0),
             helper.make_node("ReduceMax", ["b"], ["hi"], keepdims=0),
             helper.make_node("Clip", ["x", "lo", "hi"], ["y"])]
    check(graph(nodes, feed, ["y"]), feed, expect_ops=("maximum", "minimum"))


def test_cumsum_exclusive_reverse_negative_axis(monkeypatch):
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    nodes, outs = [], []
    for exclusive in (0, 1):
        for reverse in (0, 1):
            for axis in ("a1", "am2"):
                out = f"c_{exclusive}{reverse}{axis}"
                nodes.append(helper.make_node("CumSum", ["x", axis], [out], exclusive=exclusive, reverse=reverse))
                outs.append(out)
    inits = {"a1": np.array(1, np.int64), "am2": np.array(-2, np.int32)}
    lowered_three_ways(monkeypatch, nodes, {"x": x}, outs, initializers=inits, mil_values=False)
    # MIL's cumsum value inference crashes on exclusive=True: its values are compared for inclusive only.
    inclusive = [n for n in nodes if n.attribute[0].i == 0]
    model = graph(inclusive, {}, [n.output[0] for n in inclusive], {"x": x, **inits})
    assert_values(model, rtol=1e-5, atol=1e-6, monkeypatch=monkeypatch, hidden={"x"})


def test_topk_and_argmax(monkeypatch):
    x = RNG.permutation(24).astype(np.float32).reshape(2, 3, 4)
    nodes = [helper.make_node("TopK", ["x", "k"], ["v", "i"]),
             helper.make_node("TopK", ["x", "k"], ["vs", "is"], largest=0, axis=-2, sorted=1),
             helper.make_node("TopK", ["x", "k1"], ["v1", "i1"], axis=0),
             helper.make_node("ArgMax", ["x"], ["a"], axis=-1), helper.make_node("ArgMax", ["x"], ["b"], keepdims=0),
             helper.make_node("ArgMin", ["x"], ["c"], axis=1, keepdims=0)]
    lowered_three_ways(monkeypatch, nodes, {"x": x}, ["v", "i", "vs", "is", "v1", "i1", "a", "b", "c"],
                       initializers={"k": np.array([2], np.int64), "k1": np.array([1], np.int64)})


def test_topk_opset1_k_attribute(monkeypatch):
    x = RNG.permutation(24).astype(np.float32).reshape(2, 3, 4)
    old = [helper.make_node("TopK", ["x"], ["v", "i"], k=3, axis=1)]
    lowered_three_ways(monkeypatch, old, {"x": x}, ["v", "i"], opset=9)


def test_argmax_argmin_select_last_index():
    """Ties everywhere (few distinct values): the last index of the extreme value, not the first."""
    x = RNG.integers(0, 3, (3, 4, 5)).astype(np.float32)
    nodes = [helper.make_node("ArgMax", ["x"], ["a"], axis=1, select_last_index=1),
             helper.make_node("ArgMin", ["x"], ["b"], axis=-1, keepdims=0, select_last_index=1),
             helper.make_node("ArgMax", ["x"], ["first"], axis=1)]
    model = graph(nodes, {"x": x}, ["a", "b", "first"], opset=13)
    want = onnxruntime_values(model, {"x": x})
    assert not np.array_equal(want["a"], want["first"])  # the data has ties that tell them apart
    parity(model, {"x": x}, expect_ops=("reverse", "reduce_argmax"), rtol=0, atol=0)


def test_einsum(monkeypatch):
    """Matmul-shaped equations, implicit output, outer product, transpose, three operands."""
    shapes = {"a": (2, 3, 4), "b": (2, 4, 5), "q": (1, 2, 3, 4), "k": (1, 2, 5, 4), "v": (1, 2, 5, 3), "m": (3, 4),
              "n": (4, 2), "i": (3,), "j": (4,)}
    data = {name: RNG.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}
    cases = [("bij,bjk->bik", "ab"), ("bhid,bhjd->bhij", "qk"), ("ij,jk", "mn"), ("i,j->ij", "ij"), ("bij->bji", "a"),
             ("bnqd,bnkd,bnke->bnqe", "qkv")]
    nodes = [helper.make_node("Einsum", list(ins), [f"e{n}"], equation=eq) for n, (eq, ins) in enumerate(cases)]
    lowered_three_ways(monkeypatch, nodes, data, [n.output[0] for n in nodes], opset=12, rtol=1e-4, atol=1e-5)


def test_einsum_ellipsis_and_diagonal():
    """'...' spelled out per operand (broadcast from the right), a diagonal, an implicit output."""
    data = {"x": RNG.standard_normal((2, 3, 4)).astype(np.float32), "w": RNG.standard_normal((5, 4)).astype(np.float32),
            "s": RNG.standard_normal((2, 3, 3)).astype(np.float32)}
    nodes = [helper.make_node("Einsum", ["x", "w"], ["proj"], equation="...j,kj->...k"),
             helper.make_node("Einsum", ["s"], ["diag"], equation="...ii->...i"),
             helper.make_node("Einsum", ["x", "x"], ["gram"], equation="...ij,...kj")]
    model = graph(nodes, data, ["proj", "diag", "gram"], opset=12)
    parity(model, data, rtol=1e-5, atol=1e-5)


def test_einsum_of_a_scalar():
    """'->' on a scalar input (fed to Core ML as one element and squeezed inside): the scalar back."""
    from tests.converters.coreml.harness import run_reference

    feed = {"x": np.array(2.5, np.float32)}
    model = graph([helper.make_node("Einsum", ["x"], ["y"], equation="->")], feed, ["y"], opset=12)
    assert float(np.ravel(run_reference(model, {"x": feed["x"].reshape(1)})["y"])[0]) == 2.5


def test_shape_arithmetic_folds_to_numpy():
    """A typical exported shape computation on int64 constants: nothing reaches MIL but the result."""
    shape = np.array([1, 64, 7, 7], np.int64)
    nodes = [helper.make_node("Div", ["shape", "two"], ["half"]), helper.make_node("Mul", ["half", "two"], ["even"]),
             helper.make_node("Equal", ["even", "shape"], ["same"]),
             helper.make_node("Where", ["same", "shape", "one"], ["w"]),
             helper.make_node("Cast", ["w"], ["f"], to=TensorProto.FLOAT), helper.make_node("Sqrt", ["f"], ["r"]),
             helper.make_node("Ceil", ["r"], ["c"]), helper.make_node("Cast", ["c"], ["y"], to=TensorProto.INT64)]
    model = graph(nodes, {}, ["y"], {"shape": shape, "two": np.array(2, np.int64), "one": np.array(1, np.int64)})
    from bridge.converters.coreml.build import build_program

    built = build_program(model, coremltools.target.iOS16)
    assert {op.op_type for op in built.program.functions["main"].operations} == {"const", "identity"}
    numeric(model)


def test_torch_where_cumsum_topk():
    torch = pytest.importorskip("torch")

    class Model(torch.nn.Module):
        def forward(self, x):
            values, indices = torch.topk(torch.where(x > 0, x, x * 0.1).cumsum(dim=1), k=3, dim=-1)
            return values, indices

    check(export_torch(torch, Model(), torch.randn(2, 5, 6)), {"x": np.ones((2, 5, 6), np.float32)},
          expect_ops=("select", "cumsum", "topk"))
