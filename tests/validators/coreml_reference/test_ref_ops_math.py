"""Elementwise, activation, normalization, reduction, dense algebra and quantize ops in the
reference executor against PyTorch and numpy (broadcasting, negative axes, every mode)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.validators.coreml_reference.helpers import expected, rel_l2, run_cases

torch = pytest.importorskip("torch")
F = torch.nn.functional

RNG = np.random.default_rng(1)
X = RNG.standard_normal((2, 3, 6, 8)).astype(np.float32)
Y = RNG.standard_normal((3, 1, 8)).astype(np.float32)  # broadcasts against X
C3 = RNG.uniform(0.5, 1.5, 3).astype(np.float32)
C3B = RNG.standard_normal(3).astype(np.float32)
G = RNG.uniform(0.5, 1.5, (6, 8)).astype(np.float32)
W = RNG.standard_normal((5, 8)).astype(np.float32)
B5 = RNG.standard_normal(5).astype(np.float32)
M84 = RNG.standard_normal((8, 4)).astype(np.float32)
E = RNG.standard_normal((2, 8, 6, 5)).astype(np.float32)


def t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def mb():
    from coremltools.converters.mil import Builder

    return Builder


def np_layer_norm(x, axes, eps=1e-5):
    mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps)


CASES = {
    # elementwise, with broadcasting
    "add_broadcast": (lambda x, y: mb().add(x=x, y=y), lambda: X + Y),
    "sub": (lambda x, y: mb().sub(x=x, y=y), lambda: X - Y),
    "real_div": (lambda x, y: mb().real_div(x=x, y=y), lambda: X / Y),
    "pow": (lambda x, y: mb().pow(x=mb().add(x=mb().abs(x=x), y=0.5), y=y), lambda: (np.abs(X) + 0.5) ** Y),
    "maximum": (lambda x, y: mb().maximum(x=x, y=y), lambda: np.maximum(X, Y)),
    "floor_div": (lambda x, y: mb().floor_div(x=x, y=y), lambda: torch.floor_divide(t(X), t(Y))),
    "mod": (lambda x, y: mb().mod(x=x, y=y), lambda: torch.remainder(t(X), t(Y))),
    "greater": (lambda x, y: mb().greater(x=x, y=y), lambda: X > Y),
    "logical_and": (lambda x, y: mb().logical_and(x=mb().greater(x=x, y=0.0), y=mb().less_equal(x=y, y=0.5)),
                    lambda: (X > 0) & (Y <= 0.5)),
    "select": (lambda x, y: mb().select(cond=mb().greater(x=x, y=y), a=x, b=y), lambda: np.where(X > Y, X, Y)),
    "exp": (lambda x, y: mb().exp(x=x), lambda: np.exp(X)),
    "log_eps": (lambda x, y: mb().log(x=mb().abs(x=x), epsilon=1e-3), lambda: np.log(np.abs(X) + 1e-3)),
    "rsqrt": (lambda x, y: mb().rsqrt(x=mb().abs(x=x)), lambda: 1 / np.sqrt(np.abs(X) + 1e-12)),
    "erf": (lambda x, y: mb().erf(x=x), lambda: torch.erf(t(X))),
    "floor": (lambda x, y: mb().floor(x=mb().mul(x=x, y=3.0)), lambda: np.floor(X * 3)),
    "round": (lambda x, y: mb().round(x=mb().mul(x=x, y=3.0)), lambda: np.round(X * 3)),
    "sign": (lambda x, y: mb().sign(x=x), lambda: np.sign(X)),
    "clip": (lambda x, y: mb().clip(x=x, alpha=-0.5, beta=0.7), lambda: np.clip(X, -0.5, 0.7)),
    "inverse": (lambda x, y: mb().inverse(x=x, epsilon=0.0), lambda: 1 / X),
    "atan": (lambda x, y: mb().atan(x=x), lambda: np.arctan(X)),
    "cast_int32": (lambda x, y: mb().cast(x=mb().mul(x=x, y=3.0), dtype="int32"), lambda: (X * 3).astype(np.int32)),
    # activations
    "relu6": (lambda x, y: mb().relu6(x=mb().mul(x=x, y=4.0)), lambda: F.relu6(t(X) * 4)),
    "sigmoid": (lambda x, y: mb().sigmoid(x=x), lambda: torch.sigmoid(t(X))),
    "softplus": (lambda x, y: mb().softplus(x=x), lambda: F.softplus(t(X))),
    "softsign": (lambda x, y: mb().softsign(x=x), lambda: F.softsign(t(X))),
    "silu": (lambda x, y: mb().silu(x=x), lambda: F.silu(t(X))),
    "gelu_exact": (lambda x, y: mb().gelu(x=x, mode="EXACT"), lambda: F.gelu(t(X))),
    "gelu_tanh": (lambda x, y: mb().gelu(x=x, mode="TANH_APPROXIMATION"), lambda: F.gelu(t(X), approximate="tanh")),
    "gelu_sigmoid": (lambda x, y: mb().gelu(x=x, mode="SIGMOID_APPROXIMATION"), lambda: X / (1 + np.exp(-1.702 * X))),
    "elu": (lambda x, y: mb().elu(x=x, alpha=0.5), lambda: F.elu(t(X), 0.5)),
    "leaky_relu": (lambda x, y: mb().leaky_relu(x=x, alpha=0.1), lambda: F.leaky_relu(t(X), 0.1)),
    "prelu": (lambda x, y: mb().prelu(x=x, alpha=C3B), lambda: F.prelu(t(X), t(C3B))),
    "hard_sigmoid": (lambda x, y: mb().sigmoid_hard(x=x, alpha=1 / 6, beta=0.5), lambda: F.hardsigmoid(t(X))),
    "clamped_relu": (lambda x, y: mb().clamped_relu(x=x, alpha=0.2, beta=0.8),
                     lambda: np.minimum(np.where(X > 0, X, 0.2 * X), 0.8)),
    "scaled_tanh": (lambda x, y: mb().scaled_tanh(x=x, alpha=1.5, beta=0.7), lambda: 1.5 * np.tanh(0.7 * X)),
    "linear_activation": (lambda x, y: mb().linear_activation(x=x, alpha=-2.0, beta=0.5), lambda: -2 * X + 0.5),
    "softplus_parametric": (lambda x, y: mb().softplus_parametric(x=x, alpha=C3, beta=C3B),
                            lambda: C3[:, None, None] * np.log1p(np.exp(C3B[:, None, None] * X))),
    "thresholded_relu": (lambda x, y: mb().thresholded_relu(x=x, alpha=0.3), lambda: np.where(X >= 0.3, X, 0)),
    "softmax_axis1": (lambda x, y: mb().softmax(x=x, axis=1), lambda: torch.softmax(t(X), 1)),
    "softmax_negative_axis": (lambda x, y: mb().softmax(x=x, axis=-1), lambda: torch.softmax(t(X), -1)),
    # normalization
    "batch_norm": (lambda x, y: mb().batch_norm(x=x, mean=C3B, variance=C3, gamma=C3, beta=C3B, epsilon=1e-3),
                   lambda: F.batch_norm(t(X), t(C3B), t(C3), t(C3), t(C3B), eps=1e-3)),
    "instance_norm": (lambda x, y: mb().instance_norm(x=x, gamma=C3, beta=C3B, epsilon=1e-5),
                      lambda: F.instance_norm(t(X), weight=t(C3), bias=t(C3B))),
    "layer_norm_last": (lambda x, y: mb().layer_norm(x=x, axes=[-1]), lambda: F.layer_norm(t(X), (8,))),
    "layer_norm_two_axes_affine": (lambda x, y: mb().layer_norm(x=x, axes=[-2, -1], gamma=G, beta=G, epsilon=1e-3),
                                   lambda: F.layer_norm(t(X), (6, 8), t(G), t(G), eps=1e-3)),
    "layer_norm_inner_axis": (lambda x, y: mb().layer_norm(x=x, axes=[1]), lambda: np_layer_norm(X, (1,))),
    "l2_norm": (lambda x, y: mb().l2_norm(x=x, epsilon=1e-6),
                lambda: X / np.sqrt((X**2).sum(axis=(1, 2, 3), keepdims=True) + 1e-6)),
    "local_response_norm": (lambda x, y: mb().local_response_norm(x=x, size=3, alpha=1e-2, beta=0.75, k=1.0),
                            lambda: F.local_response_norm(t(X), 3, alpha=1e-2, beta=0.75, k=1.0)),
    # reductions
    "reduce_sum_keep": (lambda x, y: mb().reduce_sum(x=x, axes=[1], keep_dims=True), lambda: X.sum(1, keepdims=True)),
    "reduce_mean_negative": (lambda x, y: mb().reduce_mean(x=x, axes=[-1, -2]), lambda: X.mean((-1, -2))),
    "reduce_max": (lambda x, y: mb().reduce_max(x=x, axes=[2]), lambda: X.max(2)),
    "reduce_min": (lambda x, y: mb().reduce_min(x=x, axes=[0, 3], keep_dims=True),
                   lambda: X.min((0, 3), keepdims=True)),
    "reduce_l1_norm": (lambda x, y: mb().reduce_l1_norm(x=x, axes=[-3]), lambda: np.abs(X).sum(1)),
    "reduce_sum_square_all": (lambda x, y: mb().reduce_sum_square(x=x), lambda: np.float32((X**2).sum())),
    "reduce_log_sum": (lambda x, y: mb().reduce_log_sum(x=mb().abs(x=x), axes=[2]), lambda: np.log(np.abs(X).sum(2))),
    "reduce_prod": (lambda x, y: mb().reduce_prod(x=x, axes=[1]), lambda: X.prod(1)),
    "reduce_l2_norm": (lambda x, y: mb().reduce_l2_norm(x=x, axes=[3]), lambda: np.linalg.norm(X, axis=3)),
    "reduce_log_sum_exp": (lambda x, y: mb().reduce_log_sum_exp(x=x, axes=[-1]), lambda: torch.logsumexp(t(X), -1)),
    "reduce_argmax": (lambda x, y: mb().reduce_argmax(x=x, axis=-1), lambda: X.argmax(-1).astype(np.int32)),
    "reduce_argmin_keep": (lambda x, y: mb().reduce_argmin(x=x, axis=1, keep_dims=True),
                           lambda: X.argmin(1)[:, None].astype(np.int32)),
    # dense algebra
    "linear": (lambda x, y: mb().linear(x=x, weight=W, bias=B5), lambda: F.linear(t(X), t(W), t(B5))),
    "matmul_broadcast": (lambda x, y: mb().matmul(x=x, y=M84), lambda: X @ M84),
    "matmul_transposes": (lambda x, y: mb().matmul(x=x, y=x, transpose_x=True),
                          lambda: np.swapaxes(X, -1, -2) @ X),
    "einsum_attention": (lambda x, y: mb().einsum(values=(x, E), equation="nchw,nwhu->nchu"),
                         lambda: np.einsum("nchw,nwhu->nchu", X, E)),
}


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    cases = {name: build for name, (build, _) in CASES.items()}
    return run_cases(cases, {"x": X, "y": Y}, tmp_path_factory.mktemp("math"), "math")


@pytest.mark.parametrize("case", list(CASES))
def test_matches_reference(outputs, case):
    want = expected(CASES, case)
    got = outputs[case]
    assert got.shape == want.shape
    if want.dtype == bool:  # Core ML has no bool outputs: coremltools casts them to fp32 in the file
        want = want.astype(np.float32)
    if want.dtype.kind in "biu":
        assert got.dtype == want.dtype and np.array_equal(got, want)
    else:
        assert rel_l2(got, want) < 2e-6, rel_l2(got, want)


def test_scaled_dot_product_attention_ios18(tmp_path):
    """iOS18's fused attention with a boolean and an additive mask, against PyTorch's."""
    import coremltools as ct

    q, k, v = (RNG.standard_normal((2, 3, 5, 8)).astype(np.float32) for _ in range(3))
    keep = RNG.random((5, 5)) > 0.3
    np.fill_diagonal(keep, True)  # no fully masked rows
    bias = RNG.standard_normal((5, 5)).astype(np.float32)
    cases = {
        "bool_mask": lambda x: mb().scaled_dot_product_attention(query=x, key=k, value=v, attn_mask=keep),
        "float_mask": lambda x: mb().scaled_dot_product_attention(query=x, key=k, value=v, attn_mask=bias),
    }
    out = run_cases(cases, {"x": q}, tmp_path, "sdpa", target=ct.target.iOS18)
    sdpa = F.scaled_dot_product_attention
    assert rel_l2(out["bool_mask"], sdpa(t(q), t(k), t(v), attn_mask=t(keep))) < 2e-6
    assert rel_l2(out["float_mask"], sdpa(t(q), t(k), t(v), attn_mask=t(bias))) < 2e-6


def test_quantize_dequantize(tmp_path):
    """iOS17 activation quantization: round half to even, zero point, clip; per tensor and per axis."""
    scale = np.float32(0.02)
    axis_scale = np.array([0.01, 0.02, 0.05], np.float32)
    zero = np.array([0, 3, -2], np.int8)
    cases = {
        "q_tensor": lambda x: mb().quantize(input=x, scale=scale, zero_point=np.int8(3), output_dtype="int8"),
        "q_axis": lambda x: mb().quantize(input=x, scale=axis_scale, zero_point=zero, axis=1, output_dtype="int8"),
        "dq_axis": lambda x: mb().dequantize(
            input=mb().quantize(input=x, scale=axis_scale, zero_point=zero, axis=1, output_dtype="int8"),
            scale=axis_scale, zero_point=zero, axis=1),
    }
    out = run_cases(cases, {"x": X}, tmp_path, "quant")
    q_tensor = np.clip(np.round(X / scale) + 3, -128, 127).astype(np.int8)
    s, z = axis_scale.reshape(1, 3, 1, 1), zero.reshape(1, 3, 1, 1).astype(np.float32)
    q_axis = np.clip(np.round(X / s) + z, -128, 127).astype(np.int8)
    assert np.array_equal(out["q_tensor"], q_tensor)
    assert np.array_equal(out["q_axis"], q_axis)
    np.testing.assert_allclose(out["dq_axis"], (q_axis - z) * s, rtol=1e-6)
