"""conv, conv_transpose and pooling in the reference executor against PyTorch, onnxruntime
(SAME_UPPER / SAME_LOWER, asymmetric pads) and TensorFlow (conv_transpose SAME)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.validators.coreml_reference.helpers import expected, onnx_node, rel_l2, run_cases

torch = pytest.importorskip("torch")
F = torch.nn.functional

RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 4, 9, 11)).astype(np.float32)
W = RNG.standard_normal((6, 4, 3, 3)).astype(np.float32)
B = RNG.standard_normal(6).astype(np.float32)
W_GROUPS = RNG.standard_normal((6, 2, 3, 3)).astype(np.float32)
W_DEPTHWISE = RNG.standard_normal((8, 1, 3, 3)).astype(np.float32)
W_2X2 = RNG.standard_normal((6, 4, 2, 2)).astype(np.float32)
W_1D = RNG.standard_normal((6, 4, 5)).astype(np.float32)
W_3D = RNG.standard_normal((3, 4, 2, 3, 3)).astype(np.float32)
W_T = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
W_T_GROUPS = RNG.standard_normal((4, 2, 3, 3)).astype(np.float32)
W_T4 = RNG.standard_normal((4, 3, 4, 4)).astype(np.float32)
B_T = RNG.standard_normal(3).astype(np.float32)


def t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def ort_conv(w, auto_pad, strides, dilations=(1, 1), group=1):
    return onnx_node("Conv", {"x": X}, {"auto_pad": auto_pad, "strides": strides, "dilations": dilations,
                                        "group": group}, {"w": w})


def ort_pool(op_type, **attrs):
    return onnx_node(op_type, {"x": X}, attrs)


def tf_conv_transpose_same(x, w, stride):
    tf = pytest.importorskip("tensorflow")
    n, _, h, wd = x.shape
    out = tf.nn.conv2d_transpose(x.transpose(0, 2, 3, 1), w.transpose(2, 3, 1, 0),
                                 [n, h * stride, wd * stride, w.shape[1]], strides=stride, padding="SAME")
    return out.numpy().transpose(0, 3, 1, 2)


def tf_conv_same_dilated(x, w, dilations):
    tf = pytest.importorskip("tensorflow")
    out = tf.nn.conv2d(x.transpose(0, 2, 3, 1), w.transpose(2, 3, 1, 0), strides=1, padding="SAME",
                       dilations=dilations)
    return out.numpy().transpose(0, 3, 1, 2)


def mb():
    from coremltools.converters.mil import Builder

    return Builder


CASES = {
    # conv
    "conv_custom_asym_dilated": (
        lambda x: mb().conv(x=x, weight=W, bias=B, pad_type="custom", pad=[1, 2, 0, 1], strides=[2, 1],
                            dilations=[1, 2]),
        lambda: F.conv2d(F.pad(t(X), (0, 1, 1, 2)), t(W), t(B), stride=(2, 1), dilation=(1, 2))),
    "conv_valid_strided": (
        lambda x: mb().conv(x=x, weight=W, pad_type="valid", strides=[2, 3]),
        lambda: F.conv2d(t(X), t(W), stride=(2, 3))),
    "conv_same_stride2": (
        lambda x: mb().conv(x=x, weight=W, pad_type="same", strides=[2, 2]),
        lambda: ort_conv(W, "SAME_UPPER", [2, 2])),
    "conv_same_lower_odd_total": (  # one pixel of padding per axis: same_lower puts it before
        lambda x: mb().conv(x=x, weight=W_2X2, pad_type="same_lower", strides=[2, 2]),
        lambda: ort_conv(W_2X2, "SAME_LOWER", [2, 2])),
    "conv_same_odd_total": (
        lambda x: mb().conv(x=x, weight=W_2X2, pad_type="same", strides=[2, 2]),
        lambda: ort_conv(W_2X2, "SAME_UPPER", [2, 2])),
    "conv_same_dilated": (
        lambda x: mb().conv(x=x, weight=W, pad_type="same", dilations=[2, 3]),
        lambda: tf_conv_same_dilated(X, W, [2, 3])),
    "conv_groups": (
        lambda x: mb().conv(x=x, weight=W_GROUPS, pad_type="custom", pad=[1, 1, 1, 1], groups=2),
        lambda: F.conv2d(t(X), t(W_GROUPS), padding=1, groups=2)),
    "conv_depthwise_same": (
        lambda x: mb().conv(x=x, weight=W_DEPTHWISE, pad_type="same", strides=[2, 2], groups=4),
        lambda: ort_conv(W_DEPTHWISE, "SAME_UPPER", [2, 2], group=4)),
    "conv_1d": (
        lambda x: mb().conv(x=mb().reshape(x=x, shape=[2, 4, 99]), weight=W_1D, pad_type="custom", pad=[2, 1],
                            strides=[2], dilations=[2]),
        lambda: F.conv1d(F.pad(t(X.reshape(2, 4, 99)), (2, 1)), t(W_1D), stride=2, dilation=2)),
    "conv_3d": (
        lambda x: mb().conv(x=mb().reshape(x=x, shape=[2, 4, 3, 3, 11]), weight=W_3D, pad_type="custom",
                            pad=[1, 0, 1, 1, 0, 2], strides=[1, 2, 1]),
        lambda: F.conv3d(F.pad(t(X.reshape(2, 4, 3, 3, 11)), (0, 2, 1, 1, 1, 0)), t(W_3D), stride=(1, 2, 1))),
    # conv_transpose
    "deconv_padded_bias": (
        lambda x: mb().conv_transpose(x=x, weight=W_T, bias=B_T, pad_type="custom", pad=[1, 1, 1, 1], strides=[2, 2]),
        lambda: F.conv_transpose2d(t(X), t(W_T), t(B_T), stride=2, padding=1)),
    "deconv_output_shape": (  # PyTorch's output_padding=1 arrives as an explicit output_shape
        lambda x: mb().conv_transpose(x=x, weight=W_T, pad_type="custom", pad=[1, 1, 1, 1], strides=[2, 2],
                                      output_shape=[2, 3, 18, 22]),
        lambda: F.conv_transpose2d(t(X), t(W_T), stride=2, padding=1, output_padding=1)),
    "deconv_groups_dilated": (
        lambda x: mb().conv_transpose(x=x, weight=W_T_GROUPS, pad_type="valid", strides=[1, 2], dilations=[2, 2],
                                      groups=2),
        lambda: F.conv_transpose2d(t(X), t(W_T_GROUPS), stride=(1, 2), dilation=2, groups=2)),
    "deconv_asymmetric_pad": (
        lambda x: mb().conv_transpose(x=x, weight=W_T, pad_type="custom", pad=[0, 1, 2, 0], strides=[2, 2]),
        lambda: F.conv_transpose2d(t(X), t(W_T), stride=2)[:, :, :-1, 2:]),
    "deconv_same": (
        lambda x: mb().conv_transpose(x=x, weight=W_T4, pad_type="same", strides=[2, 2]),
        lambda: tf_conv_transpose_same(X, W_T4, 2)),
    # pools
    "max_pool_padded_ceil": (
        lambda x: mb().max_pool(x=x, kernel_sizes=[3, 3], strides=[2, 2], pad_type="custom", pad=[1, 1, 1, 1],
                                ceil_mode=True),
        lambda: F.max_pool2d(t(X), 3, 2, padding=1, ceil_mode=True)),
    "max_pool_valid": (
        lambda x: mb().max_pool(x=x, kernel_sizes=[2, 3], strides=[2, 2], pad_type="valid"),
        lambda: F.max_pool2d(t(X), (2, 3), 2)),
    "max_pool_same": (
        lambda x: mb().max_pool(x=x, kernel_sizes=[3, 3], strides=[2, 2], pad_type="same"),
        lambda: ort_pool("MaxPool", kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")),
    "max_pool_same_lower": (
        lambda x: mb().max_pool(x=x, kernel_sizes=[2, 2], strides=[2, 2], pad_type="same_lower"),
        lambda: ort_pool("MaxPool", kernel_shape=[2, 2], strides=[2, 2], auto_pad="SAME_LOWER")),
    "avg_pool_include_pad_ceil": (
        lambda x: mb().avg_pool(x=x, kernel_sizes=[3, 3], strides=[2, 2], pad_type="custom", pad=[1, 1, 1, 1],
                                exclude_padding_from_average=False, ceil_mode=True),
        lambda: F.avg_pool2d(t(X), 3, 2, padding=1, ceil_mode=True, count_include_pad=True)),
    "avg_pool_exclude_pad_ceil": (
        lambda x: mb().avg_pool(x=x, kernel_sizes=[3, 3], strides=[2, 2], pad_type="custom", pad=[1, 1, 1, 1],
                                exclude_padding_from_average=True, ceil_mode=True),
        lambda: F.avg_pool2d(t(X), 3, 2, padding=1, ceil_mode=True, count_include_pad=False)),
    "avg_pool_exclude_asymmetric": (
        lambda x: mb().avg_pool(x=x, kernel_sizes=[3, 2], strides=[1, 2], pad_type="custom", pad=[0, 1, 1, 0],
                                exclude_padding_from_average=True),
        lambda: ort_pool("AveragePool", kernel_shape=[3, 2], strides=[1, 2], pads=[0, 1, 1, 0], count_include_pad=0)),
    "avg_pool_include_asymmetric": (
        lambda x: mb().avg_pool(x=x, kernel_sizes=[3, 2], strides=[1, 2], pad_type="custom", pad=[0, 1, 1, 0],
                                exclude_padding_from_average=False),
        lambda: ort_pool("AveragePool", kernel_shape=[3, 2], strides=[1, 2], pads=[0, 1, 1, 0], count_include_pad=1)),
    "avg_pool_same_exclude": (
        lambda x: mb().avg_pool(x=x, kernel_sizes=[3, 3], strides=[2, 2], pad_type="same",
                                exclude_padding_from_average=True),
        lambda: ort_pool("AveragePool", kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER",
                         count_include_pad=0)),
    "avg_pool_1d_ceil": (
        lambda x: mb().avg_pool(x=mb().reshape(x=x, shape=[2, 4, 99]), kernel_sizes=[4], strides=[3],
                                pad_type="custom", pad=[1, 1], ceil_mode=True),
        lambda: F.avg_pool1d(t(X.reshape(2, 4, 99)), 4, 3, padding=1, ceil_mode=True)),
    "l2_pool": (
        lambda x: mb().l2_pool(x=x, kernel_sizes=[2, 2], strides=[2, 2], pad_type="valid"),
        lambda: F.lp_pool2d(t(X), 2, 2, 2)),
}


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    cases = {name: build for name, (build, _) in CASES.items()}
    return run_cases(cases, {"x": X}, tmp_path_factory.mktemp("conv_pool"), "conv_pool")


@pytest.mark.parametrize("case", list(CASES))
def test_matches_reference(outputs, case):
    want = expected(CASES, case)
    got = outputs[case]
    assert got.shape == want.shape
    assert rel_l2(got, want) < 1e-6, rel_l2(got, want)


@pytest.mark.parametrize(("shape", "kernel", "strides", "dilations"), [
    ((2, 3, 7, 20), (3, 3), (1, 1), (1, 1)),  # rows on both sides of the gather/slice threshold
    ((1, 4, 30, 33), (3, 2), (2, 3), (2, 1)),
    ((1, 5, 41), (4,), (3,), (2,)),
    ((1, 2, 5, 6, 18), (2, 3, 3), (1, 2, 1), (2, 1, 3)),
])
def test_im2col_gather_and_slices_build_the_same_columns(shape, kernel, strides, dilations):
    """Which way the columns are built depends on row length only; the matrix (and so the GEMM
    and its bits) must not."""
    from bridge.validators.runners.coreml_reference.ops.conv import gathered_columns, sliced_columns

    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    out_sp = tuple((s - (k - 1) * d - 1) // st + 1
                   for s, k, d, st in zip(shape[2:], kernel, dilations, strides, strict=True))
    sliced = sliced_columns(x, kernel, strides, dilations, out_sp)
    assert sliced.shape == (*shape[:2], np.prod(kernel), *out_sp)
    assert np.array_equal(gathered_columns(x, kernel, strides, dilations, out_sp), sliced)
