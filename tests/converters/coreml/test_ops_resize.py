"""Resize/Upsample lowering against onnxruntime.

MIL has no value inference for its resizing ops and Linux has no Core ML runtime, so each chosen op
is run by `simulate`, written from the MIL op documentation (coremltools' defs/iOS15/image_resizing.py),
and the result compared with onnxruntime. Gather and matmul lowerings are computed by MIL itself
(`mil_values`). Every case also goes through ct.convert with output shapes checked.
"""

import numpy as np
import pytest
from onnx import helper

from bridge.base.errors import ConversionError
from tests.converters.coreml.harness import check, graph, lower, onnxruntime, op_types, parity
from tests.converters.coreml.test_ops_shape import mil_values, symbolic_batch

coremltools = pytest.importorskip("coremltools")

RNG = np.random.default_rng(0)
RESIZING = {"upsample_nearest_neighbor", "upsample_bilinear", "resize_bilinear"}


def _grid(sampling_mode: str, n_in: int, n_out: int) -> np.ndarray:
    """The sampling grids as documented for resize_bilinear."""
    i = np.arange(n_out, dtype=np.float64)
    grid = {"STRICT_ALIGN_CORNERS": lambda: i * (n_in - 1) / max(n_out - 1, 1),
            "DEFAULT": lambda: i * (n_in - n_in / n_out) / max(n_out - 1, 1),
            "UNALIGN_CORNERS": lambda: (i + 0.5) * n_in / n_out - 0.5}[sampling_mode]()
    return np.clip(grid, 0, n_in - 1)


def _interpolate(x: np.ndarray, axis: int, grid: np.ndarray) -> np.ndarray:
    lo = np.floor(grid).astype(int)
    hi, frac = np.minimum(lo + 1, x.shape[axis] - 1), grid - lo
    shape = [1] * x.ndim
    shape[axis] = -1
    return np.take(x, lo, axis) * (1 - frac).reshape(shape) + np.take(x, hi, axis) * frac.reshape(shape)


def simulate(op, x: np.ndarray) -> np.ndarray:
    """One MIL resizing op applied to x from its documented semantics."""
    if op.op_type == "upsample_nearest_neighbor":
        return x.repeat(int(op.scale_factor_height.val), 2).repeat(int(op.scale_factor_width.val), 3)
    if op.op_type == "upsample_bilinear":
        align = bool(op.align_corners.val)
        half = not align if op.inputs.get("half_pixel_centers") is None else bool(op.half_pixel_centers.val)
        mode = "STRICT_ALIGN_CORNERS" if align else "UNALIGN_CORNERS" if half else "DEFAULT"
        outs = (int(x.shape[2] * op.scale_factor_height.val), int(x.shape[3] * op.scale_factor_width.val))
    else:
        mode, outs = op.sampling_mode.val, (int(op.target_size_height.val), int(op.target_size_width.val))
    for axis, n_out in zip((2, 3), outs, strict=True):
        x = _interpolate(x, axis, _grid(mode, x.shape[axis], n_out))
    return x


def resize_model(attrs: dict, scales=None, sizes=None, hw=(4, 5), opset=17):
    x = RNG.standard_normal((1, 2, *hw)).astype(np.float32)
    inputs, inits = ["x", "", ""], {}
    if scales is not None:
        inputs[2], inits["scales"] = "scales", np.asarray([1, 1, *scales], np.float32)
    if sizes is not None:
        inputs.append("sizes")
        inits["sizes"] = np.asarray([1, 2, *sizes], np.int64)
    nodes = [helper.make_node("Resize", inputs, ["y"], **attrs)]
    return graph(nodes, {"x": x}, ["y"], inits, opset), x


def verify(model, x, expect_op: str):
    """The chosen MIL op, its numbers against onnxruntime, ct.convert acceptance, and the numpy fold."""
    ref = onnxruntime(model, {"x": x})["y"]
    program = check(model, {"x": x}, expect_ops=(expect_op,))
    if expect_op in RESIZING:
        op = next(o for o in program.functions["main"].operations if o.op_type in RESIZING)
        got = simulate(op, x)
    else:
        got = mil_values(model, {"x": x})["y"]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    folded = graph(list(model.graph.node), {}, ["y"], {"x": x, **{t.name: _array(t) for t in model.graph.initializer}},
                   model.opset_import[0].version)
    np.testing.assert_allclose(mil_values(folded, {}, want_mil=False)["y"], ref, rtol=1e-5, atol=1e-5)


def _array(t):
    from onnx import numpy_helper

    return numpy_helper.to_array(t)


NEAREST = {
    "asymmetric-floor-x2": ({"coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}, (2, 2), None,
                            "upsample_nearest_neighbor"),
    "default-modes-x2x3": ({}, (2, 3), None, "upsample_nearest_neighbor"),
    "asymmetric-round-x3": ({"coordinate_transformation_mode": "asymmetric"}, (3, 3), None, "gather"),
    "default-modes-sizes": ({}, None, (3, 7), "gather"),
    "align-corners-sizes": ({"coordinate_transformation_mode": "align_corners"}, None, (7, 9), "gather"),
    "half-pixel-ceil-down": ({"nearest_mode": "ceil"}, (0.5, 0.6), None, "gather"),
}


@pytest.mark.parametrize("case", NEAREST)
def test_resize_nearest(case):
    attrs, scales, sizes, expect_op = NEAREST[case]
    verify(*resize_model({"mode": "nearest", **attrs}, scales, sizes), expect_op)


LINEAR = {
    "half-pixel-x2": ("half_pixel", (2, 2), None, "upsample_bilinear"),
    "pytorch-half-pixel-x2": ("pytorch_half_pixel", (2, 3), None, "upsample_bilinear"),
    "align-corners-x2": ("align_corners", (2, 2), None, "upsample_bilinear"),
    "asymmetric-x2": ("asymmetric", (2, 2), None, "upsample_bilinear"),
    "half-pixel-sizes": ("half_pixel", None, (6, 7), "resize_bilinear"),
    "half-pixel-down": ("half_pixel", None, (3, 2), "resize_bilinear"),
    "align-corners-sizes": ("align_corners", None, (6, 7), "resize_bilinear"),
    "asymmetric-sizes": ("asymmetric", None, (7, 8), "resize_bilinear"),
    "half-pixel-fractional-scale": ("half_pixel", (1.7, 1.3), None, "matmul"),
    "pytorch-half-pixel-to-one": ("pytorch_half_pixel", None, (1, 3), "matmul"),
}


@pytest.mark.parametrize("case", LINEAR)
def test_resize_linear(case):
    mode, scales, sizes, expect_op = LINEAR[case]
    verify(*resize_model({"mode": "linear", "coordinate_transformation_mode": mode}, scales, sizes), expect_op)


def test_resize_opset18_axes():
    """scales cover only the listed axes, in that order: W x3, H x2."""
    x = RNG.standard_normal((1, 2, 4, 5)).astype(np.float32)
    nodes = [helper.make_node("Resize", ["x", "", "s"], ["y"], mode="linear", axes=[3, 2])]
    model = graph(nodes, {"x": x}, ["y"], {"s": np.float32([3, 2])}, 18)
    verify(model, x, "upsample_bilinear")
    assert onnxruntime(model, {"x": x})["y"].shape == (1, 2, 8, 15)


def test_resize_opset10_and_upsample():
    """Before opset 11: asymmetric coordinates, onnxruntime's 'simple' rounding (floor up, ceil down)."""
    x = RNG.standard_normal((1, 2, 4, 6)).astype(np.float32)
    for op, opset, scales, expect_op in (("Resize", 10, [1, 1, 2, 2], "upsample_nearest_neighbor"),
                                         ("Resize", 10, [1, 1, 0.5, 0.5], "gather"),
                                         ("Upsample", 9, [1, 1, 2, 3], "upsample_nearest_neighbor")):
        nodes = [helper.make_node(op, ["x", "s"], ["y"], mode="nearest")]
        verify(graph(nodes, {"x": x}, ["y"], {"s": np.float32(scales)}, opset), x, expect_op)
    nodes = [helper.make_node("Upsample", ["x", "s"], ["y"], mode="linear")]
    verify(graph(nodes, {"x": x}, ["y"], {"s": np.float32([1, 1, 2, 2])}, 9), x, "upsample_bilinear")


@pytest.mark.parametrize("mode,expect_op", [("nearest", "upsample_nearest_neighbor"), ("linear", "upsample_bilinear")])
def test_resize_run_time_spatial_dims_with_integer_scales(mode, expect_op):
    model, _ = resize_model({"mode": mode}, (2, 2))
    for i in (2, 3):
        model.graph.input[0].type.tensor_type.shape.dim[i].dim_param = f"d{i}"
    assert expect_op in op_types(lower(model)[1])


def test_resize_sizes_from_a_run_time_batch():
    """Sizes = Concat(Shape(x)[:2], [7, 9]): MIL's symbolic value still names the batch."""
    x = RNG.standard_normal((2, 2, 4, 5)).astype(np.float32)
    nodes = [helper.make_node("Shape", ["x"], ["s"], end=2), helper.make_node("Concat", ["s", "hw"], ["sizes"], axis=0),
             helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="linear")]
    model = symbolic_batch(graph(nodes, {"x": x}, ["y"], {"hw": np.int64([7, 9])}))
    out = lower(model)[1].functions["main"].outputs[0]
    assert tuple(out.shape[1:]) == (2, 7, 9)


def _node_model(specs: dict, x: np.ndarray, opset: int = 19):
    """One Resize per output name: (attributes, {input slot: constant})."""
    nodes, inits = [], {}
    for name, (attrs, params) in specs.items():
        inputs = ["x", "", "", ""]
        for slot, value in params.items():
            inputs[slot] = f"{name}_{slot}"
            inits[inputs[slot]] = value
        nodes.append(helper.make_node("Resize", inputs[:max(params) + 1], [name], **attrs))
    return graph(nodes, {"x": x}, list(specs), inits, opset)


def _sizes(h, w):
    return {3: np.int64([1, 2, h, w])}


def _scales(h, w):
    return {2: np.float32([1, 1, h, w])}


def test_resize_cubic():
    """Every coordinate mode, both coefficients, exclude_outside, up and down: two matmuls with the
    cubic weights (border taps read the edge, or are dropped and the rest renormalized)."""
    x = RNG.standard_normal((1, 2, 6, 7)).astype(np.float32)
    specs = {}
    for mode in ("half_pixel", "align_corners", "asymmetric", "pytorch_half_pixel", "half_pixel_symmetric"):
        for i, (a, exclude, size) in enumerate(((-0.75, 0, _sizes(9, 11)), (-0.5, 1, _sizes(4, 5)),
                                                (-0.75, 1, _scales(2, 0.6)))):
            specs[f"{mode}_{i}"] = ({"mode": "cubic", "coordinate_transformation_mode": mode, "cubic_coeff_a": a,
                                     "exclude_outside": exclude}, size)
    parity(_node_model(specs, x), {"x": x}, expect_ops=("matmul",), rtol=1e-4, atol=1e-5)


def test_resize_antialias():
    """onnxruntime's antialiasing (Pillow's filters): shrinking stretches the kernel by in/out."""
    x = RNG.standard_normal((1, 2, 9, 8)).astype(np.float32)
    specs = {"linear_down": ({"mode": "linear", "antialias": 1}, _sizes(4, 3)),
             "linear_up_down": ({"mode": "linear", "antialias": 1, "coordinate_transformation_mode": "align_corners"},
                                _sizes(12, 5)),
             "cubic_down": ({"mode": "cubic", "antialias": 1}, _scales(0.5, 0.7)),
             "cubic_down_excluded": ({"mode": "cubic", "antialias": 1, "exclude_outside": 1, "cubic_coeff_a": -0.5},
                                     _sizes(5, 3))}
    parity(_node_model(specs, x), {"x": x}, expect_ops=("matmul",), rtol=1e-4, atol=1e-5)


def test_resize_tf_crop_and_resize():
    """The region of interest (some of it outside the input: extrapolation_value there), by every
    mode, and with opset 18's axes (W then H)."""
    x = RNG.standard_normal((1, 2, 6, 7)).astype(np.float32)
    roi = np.float32([0, 0, -0.2, 0.1, 1, 1, 1.3, 0.9])
    crop = {"coordinate_transformation_mode": "tf_crop_and_resize", "extrapolation_value": -3.0}
    specs = {mode: ({"mode": mode, **crop}, {1: roi, **_sizes(5, 8)}) for mode in ("nearest", "linear", "cubic")}
    specs["inside"] = ({"mode": "linear", **crop}, {1: np.float32([0, 0, 0.4, 0.2, 1, 1, 0.6, 0.8]), **_sizes(3, 4)})
    specs["axes"] = ({"mode": "linear", "axes": [3, 2], **crop}, {1: np.float32([0.1, -0.1, 0.9, 0.7]),
                                                                    3: np.int64([6, 4])})
    parity(_node_model(specs, x), {"x": x}, expect_ops=("select",), rtol=1e-4, atol=1e-5)


def test_resize_keep_aspect_ratio_policy():
    """One scale for both axes from sizes: the largest that fits, or the smallest that covers."""
    x = RNG.standard_normal((1, 2, 6, 9)).astype(np.float32)
    specs = {policy: ({"mode": mode, "keep_aspect_ratio_policy": policy, "axes": [2, 3]}, {3: np.int64([4, 4])})
             for policy, mode in (("not_larger", "linear"), ("not_smaller", "nearest"))}
    specs["all_axes"] = ({"mode": "linear", "keep_aspect_ratio_policy": "not_larger"}, _sizes(12, 12))
    parity(_node_model(specs, x), {"x": x}, rtol=1e-4, atol=1e-5)


def test_resize_antialiased_crop_is_refused_before_converting():
    from bridge.converters.coreml.ops.resize import ANTIALIASED_CROP
    from bridge.converters.coreml.preflight import unsupported_ops

    x = RNG.standard_normal((1, 2, 6, 7)).astype(np.float32)
    specs = {"y": ({"mode": "linear", "antialias": 1, "coordinate_transformation_mode": "tf_crop_and_resize"},
                   {1: np.float32([0, 0, 0, 0, 1, 1, 1, 1]), **_sizes(3, 3)})}
    model = _node_model(specs, x)
    assert [(u.op_type, u.reason) for u in unsupported_ops(model)] == [("Resize", ANTIALIASED_CROP)]
    with pytest.raises(ConversionError, match="antialias"):
        lower(model)


def test_resize_of_channels_is_refused():
    x = np.zeros((1, 2, 4, 4), np.float32)
    model = graph([helper.make_node("Resize", ["x", "", "s"], ["y"])], {"x": x}, ["y"], {"s": np.float32([1, 2, 1, 1])})
    with pytest.raises(ConversionError, match="spatial"):
        lower(model)


# torch exports ---------------------------------------------------------------------------------
TORCH = {
    "upsample-nearest": (dict(scale_factor=2, mode="nearest"), "upsample_nearest_neighbor"),
    "upsample-bilinear": (dict(scale_factor=2, mode="bilinear", align_corners=False), "upsample_bilinear"),
    "upsample-bilinear-aligned": (dict(scale_factor=2, mode="bilinear", align_corners=True), "upsample_bilinear"),
    "interpolate-size": (dict(size=(7, 9), mode="bilinear", align_corners=False), "resize_bilinear"),
    "interpolate-size-nearest": (dict(size=(6, 7), mode="nearest"), "gather"),
}


@pytest.mark.parametrize("case", TORCH)
def test_torch_upsampling(case):
    import io

    import onnx

    torch = pytest.importorskip("torch")
    kwargs, expect_op = TORCH[case]
    module = torch.nn.Upsample(**kwargs)
    x = torch.randn(1, 2, 4, 5)
    buf = io.BytesIO()
    torch.onnx.export(module, (x,), buf, opset_version=17, dynamo=False, input_names=["x"], output_names=["y"])
    model = onnx.load_from_string(buf.getvalue())
    verify(model, x.numpy(), expect_op)
    np.testing.assert_allclose(onnxruntime(model, {"x": x.numpy()})["y"], module(x).numpy(), rtol=1e-5, atol=1e-5)
