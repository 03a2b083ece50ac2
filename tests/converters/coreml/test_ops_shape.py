"""Shape-family converters against onnxruntime, three ways per case:

- MIL path: graph inputs bound to MIL consts, so our converters emit MIL ops and MIL's own value
  inference computes them (`mil_values`), compared with onnxruntime;
- numpy path: the same graph with every input an initializer, folded by our converters;
- acceptance: the graph with real inputs lowered and run through ct.convert, shapes equal onnxruntime's.
"""

import numpy as np
import pytest
from onnx import TensorProto, helper

from bridge.base.errors import ConversionError
from tests.converters.coreml.harness import OPSET, check, graph, lower, onnxruntime, op_types

coremltools = pytest.importorskip("coremltools")

I64_MAX, I64_MIN = np.iinfo(np.int64).max, np.iinfo(np.int64).min
RNG = np.random.default_rng(0)


def mil_values(model, feed: dict[str, np.ndarray], *, want_mil: bool = True) -> dict[str, np.ndarray]:
    """Lower `model` with each graph input bound to a MIL const (a Var, not numpy): the converters
    emit their MIL ops and MIL's value inference computes them. No Core ML runtime needed.
    `want_mil` asserts the outputs really came from MIL ops rather than a numpy fold."""
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import Function
    from onnx import numpy_helper

    from bridge.converters.coreml.build import _constant
    from bridge.converters.coreml.context import Context
    from bridge.converters.coreml.registry import lookup

    narrow = {np.dtype(np.int64): np.int32, np.dtype(np.float64): np.float32}
    ctx = Context(model.opset_import[0].version, {t.name: numpy_helper.to_array(t) for t in model.graph.initializer})
    with Function({}, opset_version=ct.target.iOS16):
        for name, value in feed.items():
            ctx.set(name, mb.const(val=value.astype(narrow.get(value.dtype, value.dtype))))
        for node in model.graph.node:
            if node.op_type == "Constant":
                ctx.set(node.output[0], _constant(node))
            else:
                lookup(node.op_type, ctx.opset)(ctx, node)
    out = {}
    for o in model.graph.output:
        assert not want_mil or not isinstance(ctx.value(o.name), np.ndarray), f"{o.name} was folded in numpy"
        out[o.name] = ctx.const(o.name)
        assert out[o.name] is not None, f"MIL could not compute {o.name}"
    return out


def verify(nodes, inputs: dict, outputs: list[str], inits: dict | None = None, *, opset: int = OPSET,
           mil: bool = True, convert: bool = False, expect_ops: tuple[str, ...] = ()):
    """The checks in the module docstring. `mil=False` for MIL ops without value inference;
    `convert=True` adds ct.convert (~0.4 s), so it is asked for once per op, not per parameter."""
    model = graph(nodes, inputs, outputs, inits, opset)
    ref = onnxruntime(model, inputs)
    if mil:
        for name, value in mil_values(model, inputs).items():
            np.testing.assert_array_equal(np.asarray(value).reshape(ref[name].shape), ref[name], err_msg=name)
    folded = graph(nodes, {}, outputs, {**inputs, **(inits or {})}, opset)
    for name, value in mil_values(folded, {}, want_mil=False).items():
        assert isinstance(value, np.ndarray)
        np.testing.assert_array_equal(value, ref[name], err_msg=f"numpy fold of {name}")
        assert value.dtype == ref[name].dtype, f"numpy fold of {name} is {value.dtype}, ONNX {ref[name].dtype}"
    if convert:
        check(model, inputs, expect_ops=expect_ops)
    return model


def node(op, inputs, outputs=("y",), **kw):
    return helper.make_node(op, list(inputs), list(outputs), **kw)


def f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def i64(*values):
    return np.asarray(values, np.int64)


def symbolic_batch(model):
    """The model with its first input's dim 0 unknown until run time."""
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    return model


# reshape family --------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(0, -1), (-1,), (2, 0, 2, 2), (4, -1, 1), (1, 24)])
def test_reshape_zero_and_minus_one(shape):
    verify([node("Reshape", ["x", "s"])], {"x": f32(2, 3, 4)}, ["y"], {"s": i64(*shape)}, convert=shape == (0, -1),
           expect_ops=("reshape",))


def test_reshape_zero_over_a_run_time_dim_becomes_minus_one():
    model = symbolic_batch(graph([node("Reshape", ["x", "s"])], {"x": f32(2, 3, 4)}, ["y"], {"s": i64(0, 12)}))
    built, program = lower(model)
    out = program.functions["main"].outputs[0]
    assert out.shape[1] == 12 and "reshape" in op_types(program)


@pytest.mark.filterwarnings("ignore:Some dimensions in the input shape are unknown")
def test_reshape_zeros_over_several_run_time_dims():
    """PaddleOCR's recognizers reshape (N, C, H, W) to (0, 0, -1) with N and W unknown: the target
    shape is assembled from the input's run-time shape, then run by the reference executor."""
    from tests.converters.coreml.harness import run_reference

    feed = {"x": f32(2, 3, 4, 5)}
    model = graph([node("Reshape", ["x", "s"])], feed, ["y"], {"s": i64(0, 0, -1)})
    for i, name in ((0, "n"), (3, "w")):
        model.graph.input[0].type.tensor_type.shape.dim[i].dim_param = name
    np.testing.assert_array_equal(run_reference(model, feed)["y"], feed["x"].reshape(2, 3, 20))


@pytest.mark.filterwarnings("ignore:Some dimensions in the input shape are unknown")
def test_squeeze_of_run_time_dims():
    """PaddleOCR squeezes its height axis, unknown until run time (ONNX promises it is 1 then);
    MIL's squeeze would keep an axis it cannot see is 1."""
    from tests.converters.coreml.harness import run_reference

    feed = {"x": f32(2, 3, 1, 5)}
    nodes = [node("Squeeze", ["x", "a"], ["s"]), node("Transpose", ["s"], ["y"], perm=[0, 2, 1])]
    model = graph(nodes, feed, ["y"], {"a": i64(2)})
    for i, name in ((0, "n"), (2, "h"), (3, "w")):
        model.graph.input[0].type.tensor_type.shape.dim[i].dim_param = name
    np.testing.assert_array_equal(run_reference(model, feed)["y"], feed["x"].squeeze(2).transpose(0, 2, 1))


@pytest.mark.filterwarnings("ignore:Some dimensions in the input shape are unknown")
@pytest.mark.parametrize("seq", [5, 9, 13])
def test_slice_with_run_time_ends(seq):
    """BERT's `position_ids[:, :seq]` with a dynamic sequence: the end is read from the input's
    shape at run time, wrapped when negative and clamped to the sliced dim, as ONNX does. One
    package runs at three sequence lengths, the last past the table (clamped)."""
    from tests.converters.coreml.harness import convert, run_reference

    table = np.arange(2 * 11, dtype=np.float32).reshape(2, 11)
    nodes = [node("Shape", ["x"], ["shape"]), node("Gather", ["shape", "one"], ["len"], axis=0),
             node("Unsqueeze", ["len", "zero"], ["end"]), node("Slice", ["table", "start", "end", "one_axis"], ["y"]),
             node("Neg", ["end"], ["minus"]), node("Slice", ["table", "minus", "big", "one_axis"], ["tail"]),
             node("Mul", ["y", "scale"], ["z"])]
    inits = {"table": table, "one": np.array(1, np.int64), "zero": i64(0), "start": i64(1), "one_axis": i64(1),
             "big": i64(I64_MAX), "scale": np.float32(2)}
    model = graph(nodes, {"x": f32(1, 5)}, ["z", "tail"], inits)
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "seq"
    converted = convert(model)
    feed = {"x": f32(1, seq)}
    got, want = run_reference(model, feed, converted=converted), onnxruntime(model, feed)
    for name in ("z", "tail"):
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert want["z"].shape == (2, min(seq, 11) - 1) and want["tail"].shape == (2, min(seq, 11))


def test_slice_with_run_time_bounds_and_a_negative_step_is_refused():
    nodes = [node("Shape", ["x"], ["shape"]), node("Slice", ["x", "shape", "zero", "zero", "minus1"], ["y"])]
    model = symbolic_batch(graph(nodes, {"x": f32(3)}, ["y"], {"zero": i64(0), "minus1": i64(-1)}))
    with pytest.raises(ConversionError, match="run-time starts or ends with a negative step"):
        lower(model)


@pytest.mark.filterwarnings("ignore:Some dimensions in the input shape are unknown")
def test_trilu():
    """Upper and lower triangles with offsets (a causal attention mask), and over run-time dims."""
    from tests.converters.coreml.harness import parity, run_reference

    feed = {"x": f32(2, 4, 5)}
    nodes = [node("Trilu", ["x"], ["up"]), node("Trilu", ["x", "one"], ["up1"]),
             node("Trilu", ["x", "minus2"], ["low"], upper=0), node("Trilu", ["x"], ["low0"], upper=0)]
    inits = {"one": np.array(1, np.int64), "minus2": np.array(-2, np.int64)}
    parity(graph(nodes, feed, ["up", "up1", "low", "low0"], inits, opset=14), feed, expect_ops=("select",),
           rtol=0, atol=0)
    model = graph(nodes[::3], feed, ["up", "low0"], opset=14)
    for i, name in ((1, "rows"), (2, "cols")):
        model.graph.input[0].type.tensor_type.shape.dim[i].dim_param = name
    got = run_reference(model, feed)
    np.testing.assert_array_equal(got["up"], np.triu(feed["x"]))
    np.testing.assert_array_equal(got["low0"], np.tril(feed["x"]))


def test_reshape_allowzero_empty_is_refused():
    model = graph([node("Reshape", ["x", "s"], allowzero=1)], {"x": np.zeros((0, 3), np.float32)}, ["y"],
                  {"s": i64(3, 0)}, opset=14)
    with pytest.raises(ConversionError, match="empty tensor"):
        mil_values(model, {"x": np.zeros((0, 3), np.float32)})


@pytest.mark.parametrize("axis", [0, 1, 3, -1, 4])
def test_flatten(axis):
    verify([node("Flatten", ["x"], axis=axis)], {"x": f32(2, 3, 4, 5)}, ["y"])


@pytest.mark.parametrize("perm", [None, [0, 2, 3, 1], [3, 1, 0, 2]])
def test_transpose(perm):
    kw = {} if perm is None else {"perm": perm}
    verify([node("Transpose", ["x"], **kw)], {"x": f32(2, 3, 4, 5)}, ["y"], convert=perm is None,
           expect_ops=("transpose",))


@pytest.mark.parametrize("opset,axes", [(11, [1, -1]), (11, None), (13, [-3]), (13, None)])
def test_squeeze(opset, axes):
    if opset >= 13:
        n, inits = node("Squeeze", ["x", "a"] if axes else ["x"]), ({"a": i64(*axes)} if axes else {})
    else:
        n, inits = node("Squeeze", ["x"], **({"axes": axes} if axes else {})), {}
    verify([n], {"x": f32(2, 1, 3, 1)}, ["y"], inits, opset=opset, convert=opset == 13 and axes is None)


@pytest.mark.parametrize("opset,axes", [(11, [0, -1]), (13, [1, 3]), (13, [-1]), (13, [0])])
def test_unsqueeze(opset, axes):
    if opset >= 13:
        n, inits = node("Unsqueeze", ["x", "a"]), {"a": i64(*axes)}
    else:
        n, inits = node("Unsqueeze", ["x"], axes=axes), {}
    verify([n], {"x": f32(2, 3)}, ["y"], inits, opset=opset, convert=opset == 11)


# joining and splitting -------------------------------------------------------------------------
def test_concat_negative_axis_with_constant_and_empty_parts():
    verify([node("Concat", ["a", "c", "e", "b"], axis=-1)], {"a": f32(2, 3), "b": f32(2, 1)}, ["y"],
           {"c": f32(2, 2), "e": np.zeros((2, 0), np.float32)}, convert=True, expect_ops=("concat",))


def test_concat_of_shape_pieces_folds_to_int64():
    nodes = [node("Shape", ["x"], ["s"]), node("Gather", ["s", "i"], ["b"], axis=0),
             node("Concat", ["b", "m"], ["y"], axis=0)]
    model = graph(nodes, {"x": f32(3, 4)}, ["y"], {"i": i64(0), "m": i64(-1)})
    got = mil_values(model, {"x": f32(3, 4)}, want_mil=False)["y"]
    assert isinstance(got, np.ndarray) and got.dtype == np.int64 and got.tolist() == [3, -1]


@pytest.mark.parametrize("opset,split,outputs", [(11, [2, 5], 2), (13, [1, 1, 5], 3), (13, None, 1), (18, None, 3)])
def test_split(opset, split, outputs):
    names = [f"y{i}" for i in range(outputs)]
    inputs, inits, kw = ["x"], {}, {"axis": -1}
    if split and opset >= 13:
        inputs, inits = ["x", "s"], {"s": i64(*split)}
    elif split:
        kw["split"] = split
    if opset >= 18:
        kw["num_outputs"] = outputs
    x = f32(2, 7) if split or opset >= 18 else f32(2, 6)
    verify([node("Split", inputs, names, **kw)], {"x": x}, names, inits, opset=opset, convert=opset == 18)


def test_split_equal_parts_without_sizes():
    verify([node("Split", ["x"], ["a", "b", "c"], axis=1)], {"x": f32(2, 6)}, ["a", "b", "c"], opset=13)


# slicing ---------------------------------------------------------------------------------------
SLICES = {
    "int64-max-end": ([1], [I64_MAX], [1], None),
    "step-2": ([1], [5], [1], [2]),
    "negative-step-to-start": ([-1], [I64_MIN], [1], [-1]),
    "negative-step-inner": ([5], [0], [1], [-2]),
    "negative-start-end": ([-3, 0], [-1, 2], [2, 0], None),
    "clamped": ([-100], [100], [-1], None),
    "negative-axes": ([0, 1], [2, 3], [-1, -2], [1, 1]),
}


@pytest.mark.parametrize("case", SLICES)
def test_slice(case):
    starts, ends, axes, steps = SLICES[case]
    names = ["x", "st", "en", "ax"] + (["sp"] if steps else [])
    inits = {"st": i64(*starts), "en": i64(*ends), "ax": i64(*axes)} | ({"sp": i64(*steps)} if steps else {})
    verify([node("Slice", names)], {"x": f32(3, 6, 4)}, ["y"], inits, convert=case.startswith("negative-step"),
           expect_ops=("slice_by_index",))


def test_slice_opset9_attributes():
    verify([node("Slice", ["x"], starts=[1, -2], ends=[3, 1000], axes=[0, 2])], {"x": f32(3, 6, 4)}, ["y"], opset=9)


def test_slice_of_a_run_time_dim_uses_masks():
    model = symbolic_batch(graph([node("Slice", ["x", "st", "en", "ax"])], {"x": f32(3, 6)}, ["y"],
                                 {"st": i64(1), "en": i64(I64_MAX), "ax": i64(0)}))
    assert "slice_by_index" in op_types(lower(model)[1])


def test_empty_slice_is_refused():
    model = graph([node("Slice", ["x", "st", "en"])], {"x": f32(3, 6)}, ["y"], {"st": i64(4), "en": i64(2)})
    with pytest.raises(ConversionError, match="empty"):
        mil_values(model, {"x": f32(3, 6)})


# gathering -------------------------------------------------------------------------------------
@pytest.mark.parametrize("indices,axis", [(i64(-1, 0, 2), 0), (np.array([[0, -2], [1, 1]]), 1), (i64(-1)[0], -1)])
def test_gather_constant_indices(indices, axis):
    verify([node("Gather", ["x", "i"], axis=axis)], {"x": f32(3, 4, 5)}, ["y"], {"i": np.asarray(indices, np.int64)},
           convert=axis == 1, expect_ops=("gather",))


def test_gather_run_time_indices_wrap_negatives():
    """An embedding lookup: the table is an initializer, the ids arrive at run time."""
    ids = np.array([[0, 5, -1, 3]], np.int64)
    verify([node("Gather", ["w", "ids"])], {"ids": ids}, ["y"], {"w": f32(6, 4)}, convert=True,
           expect_ops=("gather", "select"))


@pytest.mark.filterwarnings("ignore:Some dimensions in the input shape are unknown")
def test_gather_into_a_run_time_dim_wraps_negatives_at_run_time():
    """A dynamic sequence: x[:, -1] (BERT's pooler reads token 0, GPT-2 the last) and run-time
    indices both wrap against the length read from the input's shape, at two lengths."""
    from tests.converters.coreml.harness import convert, run_reference

    nodes = [node("Gather", ["x", "last"], ["y"], axis=1), node("Gather", ["x", "ids"], ["z"], axis=1)]
    model = graph(nodes, {"x": f32(2, 5, 3), "ids": i64(0, -2, 1)}, ["y", "z"], {"last": i64(-1)[0]})
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "seq"
    converted = convert(model)
    for seq in (5, 8):
        feed = {"x": f32(2, seq, 3), "ids": i64(0, -2, -seq)}
        got, want = run_reference(model, feed, converted=converted), onnxruntime(model, feed)
        for name in ("y", "z"):
            np.testing.assert_array_equal(got[name], want[name], err_msg=f"{name} at {seq}")


def test_gather_elements():
    idx = np.array([[0, -1, 2], [1, 0, -3]], np.int64)
    verify([node("GatherElements", ["x", "i"], axis=1)], {"x": f32(2, 3)}, ["y"], {"i": idx}, convert=True,
           expect_ops=("gather_along_axis",))
    verify([node("GatherElements", ["x", "i"], axis=0)], {"x": f32(3, 3), "i": np.array([[2, 0, 1]], np.int64)}, ["y"])


def test_gather_of_a_bool_mask():
    """Transformer exports gather rows of a bool attention mask; MIL's gathers take numbers only."""
    from tests.converters.coreml.harness import parity

    feed = {"x": f32(4, 3)}
    nodes = [node("Greater", ["x", "zero"], ["mask"]), node("Gather", ["mask", "i"], ["rows"]),
             node("GatherElements", ["mask", "j"], ["picked"], axis=1)]
    inits = {"zero": np.float32(0), "i": i64(3, -1, 0), "j": np.array([[2], [0], [1], [-1]], np.int64)}
    parity(graph(nodes, feed, ["rows", "picked"], inits), feed, expect_ops=("gather", "gather_along_axis"),
           rtol=0, atol=0)


# broadcasting and padding ----------------------------------------------------------------------
@pytest.mark.parametrize("in_shape,shape", [((3, 1), (2, 1, 4)), ((2, 3), (1, 1)), ((1, 3, 1), (4, 3, 2))])
def test_expand(in_shape, shape):
    verify([node("Expand", ["x", "s"])], {"x": f32(*in_shape)}, ["y"], {"s": i64(*shape)}, convert=len(shape) == 3)


def test_expand_of_a_run_time_dim_broadcasts_by_add():
    """The run-time dim may be 1 (then it becomes 4) or 4: MIL's broadcasting decides, like ONNX's."""
    model = symbolic_batch(graph([node("Expand", ["x", "s"])], {"x": f32(1, 3)}, ["y"], {"s": i64(4, 3)}))
    assert "add" in op_types(lower(model)[1])  # fill of a known shape folds to a constant


def test_expand_to_a_run_time_shape():
    nodes = [node("Shape", ["like"], ["s"]), node("Expand", ["x", "s"])]
    model = symbolic_batch(graph(nodes, {"like": f32(2, 3), "x": f32(1, 3)}, ["y"]))
    assert {"fill", "add"} <= set(op_types(lower(model)[1]))


def test_expand_a_constant_to_a_run_time_shape():
    """ViT's class token: a weight expanded to the run-time batch (was a KeyError on its dtype)."""
    from tests.converters.coreml.harness import run_reference

    nodes = [node("Shape", ["like"], ["s"], end=1), node("Concat", ["s", "rest"], ["shape"], axis=0),
             node("Expand", ["token", "shape"])]
    feed, token = {"like": f32(2, 3)}, f32(1, 1, 4)
    model = symbolic_batch(graph(nodes, feed, ["y"], {"token": token, "rest": i64(1, 4)}))
    np.testing.assert_array_equal(run_reference(model, feed)["y"], np.broadcast_to(token, (2, 1, 4)))


@pytest.mark.filterwarnings("ignore:Some dimensions in the input shape are unknown")
def test_expand_a_bool_mask_to_a_run_time_shape():
    """BERT's extended attention mask with a dynamic sequence: a bool [N, 1, 1, S] expanded to
    [N, 1, S, S] read from shapes at run time (MIL's add takes no bools: through int32)."""
    from tests.converters.coreml.harness import convert, run_reference

    nodes = [node("Greater", ["m", "half"], ["mask"]), node("Shape", ["m"], ["s"], start=1),
             node("Concat", ["one", "one", "s", "s"], ["shape"], axis=0), node("Unsqueeze", ["mask", "axes"], ["m4"]),
             node("Expand", ["m4", "shape"], ["y"])]
    model = graph(nodes, {"m": f32(1, 5)}, ["y"], {"half": np.float32(0), "one": i64(1), "axes": i64(1, 2)})
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "seq"
    converted = convert(model)
    for seq in (5, 7):
        feed = {"m": f32(1, seq)}
        got, want = run_reference(model, feed, converted=converted)["y"], onnxruntime(model, feed)["y"]
        assert want.dtype == bool and want.shape == (1, 1, seq, seq)
        np.testing.assert_array_equal(got, want.astype(got.dtype))  # Core ML outputs no bools


def test_tile():
    verify([node("Tile", ["x", "r"])], {"x": f32(2, 1, 3)}, ["y"], {"r": i64(2, 3, 1)}, convert=True,
           expect_ops=("tile",))


PADS = {
    "constant-value": ("constant", [0, 0, 1, 2, 0, 0, 3, 0], 1.5, None),
    "reflect": ("reflect", [0, 0, 1, 2, 0, 0, 2, 1], None, None),
    "edge": ("edge", [0, 1, 1, 0, 0, 0, 2, 3], None, None),
    "axes": ("constant", [2, 1, 0, 3], -2.0, [-1, 2]),
}


@pytest.mark.parametrize("case", PADS)
def test_pad(case):
    mode, pads, value, axes = PADS[case]
    names, inits = ["x", "p"], {"p": i64(*pads)}
    if value is not None or axes is not None:
        names.append("v")
        inits["v"] = np.float32(0.0 if value is None else value).reshape(())
    if axes is not None:
        names.append("a")
        inits["a"] = i64(*axes)
    verify([node("Pad", names, mode=mode)], {"x": f32(1, 2, 4, 5)}, ["y"], inits, opset=18, convert=case != "axes",
           expect_ops=("pad",))


def test_pad_opset2_attributes():
    verify([node("Pad", ["x"], pads=[0, 1, 2, 0, 2, 1], value=0.5)], {"x": f32(2, 3, 4)}, ["y"], opset=2)


def test_pad_wrap_and_negative_pads():
    """wrap (circular: the other end's slices concatenated) and negative pads (a crop after the rest
    is padded), run by the reference executor."""
    from tests.converters.coreml.harness import parity

    feed = {"x": f32(1, 2, 4, 5)}
    inits = {"wrap": i64(0, 0, 1, 3, 0, 0, 2, 1), "crop": i64(0, 0, -1, 2, 0, 0, 1, -2),
             "crop_reflect": i64(0, 0, 2, -1, 0, 0, -1, 1)}
    nodes = [node("Pad", ["x", "wrap"], ["w"], mode="wrap"), node("Pad", ["x", "crop"], ["c"]),
             node("Pad", ["x", "crop_reflect"], ["r"], mode="reflect")]
    parity(graph(nodes, feed, ["w", "c", "r"], inits, opset=19), feed, expect_ops=("concat", "slice_by_index"),
           rtol=0, atol=0)


# shape queries and generators ------------------------------------------------------------------
@pytest.mark.parametrize("kw", [{}, {"start": 1}, {"start": -3, "end": -1}, {"end": 10}])
def test_shape_folds_when_static(kw):
    model = graph([node("Shape", ["x"], **kw)], {"x": f32(2, 3, 4, 5)}, ["y"], opset=15)
    got = mil_values(model, {"x": f32(2, 3, 4, 5)}, want_mil=False)["y"]
    assert isinstance(got, np.ndarray) and got.dtype == np.int64
    np.testing.assert_array_equal(got, onnxruntime(model, {"x": f32(2, 3, 4, 5)})["y"])


def test_shape_of_a_run_time_dim_feeds_reshape():
    """The dynamic-batch export pattern: Shape -> Gather -> Unsqueeze -> Concat -> Reshape."""
    nodes = [node("Shape", ["x"], ["s"]), node("Gather", ["s", "zero"], ["b"], axis=0),
             node("Unsqueeze", ["b", "ax"], ["b1"]), node("Concat", ["b1", "m"], ["t"], axis=0),
             node("Reshape", ["x", "t"], ["y"])]
    model = symbolic_batch(graph(nodes, {"x": f32(2, 3, 4)}, ["y"], {"zero": i64(0)[0], "ax": i64(0), "m": i64(-1)}))
    out = lower(model)[1].functions["main"].outputs[0]
    assert out.shape[-1] == 12  # MIL tracked the batch symbol through the chain


def test_shape_slice_of_a_run_time_dim():
    model = symbolic_batch(graph([node("Shape", ["x"], end=1)], {"x": f32(2, 3)}, ["y"], opset=15))
    program = lower(model)[1]
    assert {"shape", "slice_by_index"} <= set(op_types(program))


def test_size():
    verify([node("Size", ["x"])], {"x": f32(2, 3, 4)}, ["y"], mil=False, convert=False)


@pytest.mark.parametrize("value", [None, np.array([7], np.int64), np.array([2.5], np.float32)])
def test_constant_of_shape(value):
    kw = {} if value is None else {"value": helper.make_tensor("v", helper.np_dtype_to_tensor_dtype(value.dtype),
                                                                [1], value)}
    model = verify([node("ConstantOfShape", ["s"], **kw)], {"s": i64(2, 3)}, ["y"], mil=False, convert=False)
    assert "fill" in op_types(lower(model)[1])  # a run-time shape


@pytest.mark.parametrize("start,limit,delta", [(0, 7, 2), (10, 1, -3), (0.5, 2.0, 0.5)])
def test_range(start, limit, delta):
    """Inputs arrive as [1] tensors squeezed to scalars: Core ML takes no rank-0 inputs."""
    dtype = np.float32 if isinstance(start, float) else np.int64
    inputs = {n: np.asarray([v], dtype) for n, v in zip("abc", (start, limit, delta), strict=True)}
    nodes = [node("Squeeze", [n], [n + "0"]) for n in "abc"] + [node("Range", ["a0", "b0", "c0"])]
    model = verify(nodes, inputs, ["y"], mil=False, convert=False)
    assert "range_1d" in op_types(lower(model)[1])


# pass-throughs ---------------------------------------------------------------------------------
def test_identity_and_dropout_with_mask():
    nodes = [node("Identity", ["x"], ["i"]), node("Dropout", ["i", "r"], ["y", "mask"]), node("Relu", ["y"], ["z"])]
    model = graph(nodes, {"x": f32(2, 3)}, ["z", "mask"], {"r": np.float32(0.5)})
    ref = onnxruntime(model, {"x": f32(2, 3)})
    check(model, {"x": f32(2, 3)})
    assert ref["mask"].all()


def test_dropout_in_training_mode_is_refused():
    model = graph([node("Dropout", ["x", "r", "t"])], {"x": f32(2, 3)}, ["y"],
                  {"r": np.float32(0.5), "t": np.array(True)})
    with pytest.raises(ConversionError, match="training_mode"):
        lower(model)


# depth <-> space (MIL has no value inference for these: numpy fold and acceptance only) ---------
@pytest.mark.parametrize("mode,mil_op", [("DCR", "depth_to_space"), ("CRD", "pixel_shuffle")])
def test_depth_to_space(mode, mil_op):
    verify([node("DepthToSpace", ["x"], blocksize=2, mode=mode)], {"x": f32(1, 8, 3, 2)}, ["y"], mil=False,
           convert=True, expect_ops=(mil_op,))


def test_space_to_depth():
    verify([node("SpaceToDepth", ["x"], blocksize=2)], {"x": f32(1, 3, 4, 6)}, ["y"], mil=False, convert=True,
           expect_ops=("space_to_depth",))


def test_non_zero():
    x = np.array([[0, 1.5, 0], [2, 0, -1]], np.float32)
    model = verify([node("NonZero", ["x"])], {"x": x}, ["y"], convert=False)
    assert "non_zero" in op_types(lower(model)[1])  # ct.convert takes the data-dependent shape


# torch exports ---------------------------------------------------------------------------------
def test_torch_shape_ops_convert_with_parity():
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(10, 4)

        def forward(self, x, ids):
            a, b = torch.split(x.permute(0, 2, 3, 1), [1, 2], dim=-1)
            c = torch.cat([b, a], dim=-1)[:, 1:5:2]
            e = self.emb(ids).view(1, -1)
            return c.flatten(1), e

    x, ids = torch.randn(2, 3, 6, 4), torch.tensor([[1, 9, 0]])
    model = _export(torch, Net().eval(), (x, ids))
    feed = {"x": x.numpy(), "ids": ids.numpy()}
    check(model, feed, expect_ops=("transpose", "split", "concat", "slice_by_index", "gather"))
    ref, got = onnxruntime(model, feed), mil_values(model, feed)
    for name, value in ref.items():
        np.testing.assert_allclose(np.asarray(got[name]), value, rtol=1e-6, err_msg=name)


def test_torch_pixel_shuffle_converts():
    torch = pytest.importorskip("torch")
    model = _export(torch, torch.nn.PixelShuffle(2), (torch.randn(1, 8, 3, 3),))
    check(model, {"x": np.zeros((1, 8, 3, 3), np.float32)}, expect_ops=("pixel_shuffle",))


def _export(torch, module, args):
    import io

    import onnx

    buf = io.BytesIO()
    names = ["x", "ids"][: len(args)]
    torch.onnx.export(module, args, buf, opset_version=17, dynamo=False, input_names=names)
    return onnx.load_from_string(buf.getvalue())


def test_int64_input_types_are_narrowed():
    """A Gather over an int64 graph input reaches MIL as int32 (Core ML has no int64)."""
    model = graph([node("Gather", ["w", "ids"])], {"ids": np.array([1, 2], np.int64)}, ["y"], {"w": f32(3, 2)})
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.INT64
    check(model, {"ids": np.array([1, 2], np.int64)})
