"""Shape/tensor, gather/scatter and resize ops in the reference executor against numpy, PyTorch
and TensorFlow (negative axes and indices, masks, every pad and sampling mode)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.validators.coreml_reference.helpers import expected, rel_l2, run_cases

torch = pytest.importorskip("torch")
F = torch.nn.functional

RNG = np.random.default_rng(2)
X = RNG.standard_normal((2, 3, 6, 8)).astype(np.float32)
IDX = np.array([2, 0, -1, 5], np.int32)
IDX_ND = np.array([[[1, 2], [0, 1]], [[1, 0], [0, 2]]], np.int32)  # (2, 2, 2) into X's first two axes
IDX_ND_B1 = np.array([[[2, 1], [0, 5]], [[1, 1], [2, 0]]], np.int32)  # batch_dims=1: into axes 1, 2
IDX_ALONG = RNG.integers(0, 6, (2, 3, 4, 8)).astype(np.int32)
UPD = RNG.standard_normal((2, 3, 6, 3)).astype(np.float32)
UPD_ALONG = RNG.standard_normal((2, 3, 4, 8)).astype(np.float32)
IDX_DUP = np.array([1, 1, 4], np.int32)
IDX_ND_DUP = np.array([[[1, 0], [1, 0]], [[0, 2], [1, 0]]], np.int32)
UPD_ND = RNG.standard_normal((2, 2, 6, 8)).astype(np.float32)


def t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def tf():
    return pytest.importorskip("tensorflow")


def nhwc(a):
    return a.transpose(0, 2, 3, 1)


def nchw(a):
    return np.asarray(a).transpose(0, 3, 1, 2)


def mb():
    from coremltools.converters.mil import Builder

    return Builder


def scatter_add_axis3(data, idx, upd):
    out = data.copy()
    for i, j in enumerate(idx):
        out[..., j] += upd[..., i]
    return out


def band(x, lower, upper):
    m, n = x.shape[-2:]
    i, j = np.arange(m)[:, None], np.arange(n)[None, :]
    return np.where(((lower < 0) | (i - j <= lower)) & ((upper < 0) | (j - i <= upper)), x, 0)


CASES = {
    # iOS17 aligns a 0 in `shape` with x's dims from the right: [0, -1, 8] keeps x.shape[-3] = 3
    "reshape_zero_and_minus_one": (lambda x: mb().reshape(x=x, shape=[0, -1, 8]), lambda: X.reshape(3, -1, 8)),
    "transpose": (lambda x: mb().transpose(x=x, perm=[0, 2, 3, 1]), lambda: X.transpose(0, 2, 3, 1)),
    "expand_dims_negative": (lambda x: mb().expand_dims(x=x, axes=[-2]), lambda: X[:, :, :, None, :]),
    "squeeze_axes": (lambda x: mb().squeeze(x=mb().reshape(x=x, shape=[2, 1, 3, 1, 48]), axes=[1, -2]),
                     lambda: X.reshape(2, 3, 48)),
    "squeeze_all_to_scalar": (lambda x: mb().squeeze(x=mb().slice_by_size(x=x, begin=[1, 2, 3, 4], size=[1, 1, 1, 1])),
                              lambda: np.float32(X[1, 2, 3, 4])),
    "slice_by_index_masks": (
        lambda x: mb().slice_by_index(x=x, begin=[0, 1, 0, -3], end=[0, 0, 6, 0], stride=[1, 1, 2, 1],
                                      begin_mask=[True, False, False, False], end_mask=[True, True, False, True],
                                      squeeze_mask=[False, False, False, False]),
        lambda: X[:, 1:, 0:6:2, -3:]),
    "slice_by_index_reverse_squeeze": (
        lambda x: mb().slice_by_index(x=x, begin=[1, 0, 0, 0], end=[2, 3, 6, 8], stride=[1, 1, 1, -2],
                                      begin_mask=[False, True, True, True], end_mask=[False, True, True, True],
                                      squeeze_mask=[True, False, False, False]),
        lambda: X[1, :, :, ::-2]),
    "slice_by_size": (lambda x: mb().slice_by_size(x=x, begin=[0, 1, 2, 3], size=[-1, 2, 3, -1]),
                      lambda: X[:, 1:3, 2:5, 3:]),
    "concat_negative_axis": (lambda x: mb().concat(values=[x, mb().mul(x=x, y=2.0)], axis=-1),
                             lambda: np.concatenate([X, 2 * X], -1)),
    "concat_interleave": (lambda x: mb().concat(values=[x, mb().mul(x=x, y=2.0)], axis=1, interleave=True),
                          lambda: np.stack([X, 2 * X], 2).reshape(2, 6, 6, 8)),
    "split_sizes": (lambda x: mb().split(x=x, split_sizes=[2, 4], axis=-2)[1], lambda: X[:, :, 2:]),
    "tile": (lambda x: mb().tile(x=x, reps=[1, 2, 1, 3]), lambda: np.tile(X, (1, 2, 1, 3))),
    "pad_constant": (lambda x: mb().pad(x=x, pad=[1, 2, 0, 3], mode="constant", constant_val=1.5),
                     lambda: F.pad(t(X), (0, 3, 1, 2), value=1.5)),
    "pad_reflect": (lambda x: mb().pad(x=x, pad=[2, 1, 3, 0], mode="reflect"),
                    lambda: F.pad(t(X), (3, 0, 2, 1), mode="reflect")),
    "pad_replicate": (lambda x: mb().pad(x=x, pad=[0, 2, 1, 1], mode="replicate"),
                      lambda: F.pad(t(X), (1, 1, 0, 2), mode="replicate")),
    "stack": (lambda x: mb().stack(values=[x, x], axis=-2), lambda: np.stack([X, X], -2)),
    "reverse": (lambda x: mb().reverse(x=x, axes=[1, -1]), lambda: X[:, ::-1, :, ::-1]),
    "band_part": (lambda x: mb().band_part(x=x, lower=1, upper=2), lambda: band(X, 1, 2)),
    "band_part_lower_only": (lambda x: mb().band_part(x=x, lower=-1, upper=0), lambda: np.tril(X)),
    "cumsum_exclusive_reverse": (lambda x: mb().cumsum(x=x, axis=-1, exclusive=True, reverse=True),
                                 lambda: np.flip(np.cumsum(np.flip(X, -1), -1), -1) - X),
    "cumsum": (lambda x: mb().cumsum(x=x, axis=2), lambda: np.cumsum(X, 2)),
    "topk_values": (lambda x: mb().topk(x=x, k=3, axis=-1)[0], lambda: torch.topk(t(X), 3, -1).values),
    "topk_indices_ascending": (lambda x: mb().topk(x=x, k=2, axis=1, ascending=True)[1],
                               lambda: torch.topk(t(X), 2, 1, largest=False).indices.int()),
    "argsort": (lambda x: mb().argsort(x=x, axis=-2), lambda: np.argsort(-X, -2, kind="stable").astype(np.int32)),
    "one_hot": (lambda x: mb().one_hot(indices=mb().reduce_argmax(x=x, axis=-1), one_hot_vector_size=8, axis=1),
                lambda: np.moveaxis(np.eye(8, dtype=np.int32)[X.argmax(-1)], -1, 1)),
    "flatten2d": (lambda x: mb().flatten2d(x=x, axis=-2), lambda: X.reshape(6, 48)),
    "range_1d": (lambda x: mb().range_1d(start=1.0, end=4.0, step=0.5), lambda: np.arange(1, 4, 0.5, np.float32)),
    "fill_like": (lambda x: mb().fill_like(ref_tensor=mb().shape(x=x), value=2.5), lambda: np.full(4, 2.5, np.float32)),
    "non_zero": (lambda x: mb().non_zero(x=mb().greater(x=x, y=1.5)), lambda: np.argwhere(X > 1.5).astype(np.int32)),
    "shape": (lambda x: mb().shape(x=x), lambda: np.array(X.shape, np.int32)),
    "pixel_shuffle": (lambda x: mb().pixel_shuffle(x=mb().reshape(x=x, shape=[2, 12, 3, 4]), upscale_factor=2),
                      lambda: F.pixel_shuffle(t(X.reshape(2, 12, 3, 4)), 2)),
    "pixel_unshuffle": (lambda x: mb().pixel_unshuffle(x=x, downscale_factor=np.uint32(2)),
                        lambda: F.pixel_unshuffle(t(X), 2)),
    "depth_to_space": (lambda x: mb().depth_to_space(x=mb().reshape(x=x, shape=[2, 12, 3, 4]), block_size=2),
                       lambda: nchw(tf().nn.depth_to_space(nhwc(X.reshape(2, 12, 3, 4)), 2))),
    "space_to_depth": (lambda x: mb().space_to_depth(x=x, block_size=2),
                       lambda: nchw(tf().nn.space_to_depth(nhwc(X), 2))),
    "space_to_batch": (lambda x: mb().space_to_batch(x=x, block_shape=[2, 3], paddings=[[0, 2], [1, 0]]),
                       lambda: nchw(tf().space_to_batch_nd(nhwc(X), [2, 3], [[0, 2], [1, 0]]))),
    "batch_to_space": (lambda x: mb().batch_to_space(x=mb().reshape(x=x, shape=[6, 1, 6, 8]), block_shape=[2, 3],
                                                     crops=[[1, 0], [2, 1]]),
                       lambda: nchw(tf().batch_to_space(nhwc(X.reshape(6, 1, 6, 8)), [2, 3], [[1, 0], [2, 1]]))),
    "crop": (lambda x: mb().crop(x=x, crop_height=[1, 2], crop_width=[0, 3]), lambda: X[..., 1:4, 0:5]),
    # gather / scatter
    "gather_negative_indices": (lambda x: mb().gather(x=x, indices=IDX, axis=-2), lambda: np.take(X, IDX, -2)),
    "gather_batch_dims": (lambda x: mb().gather(x=x, indices=IDX_ALONG[:, :, 0, :3] % 6, axis=2, batch_dims=2),
                          lambda: tf().gather(X, IDX_ALONG[:, :, 0, :3] % 6, axis=2, batch_dims=2)),
    "gather_along_axis": (lambda x: mb().gather_along_axis(x=x, indices=IDX_ALONG, axis=2),
                          lambda: np.take_along_axis(X, IDX_ALONG, 2)),
    "gather_nd": (lambda x: mb().gather_nd(x=x, indices=IDX_ND), lambda: tf().gather_nd(X, IDX_ND)),
    "gather_nd_batch_dims": (lambda x: mb().gather_nd(x=x, indices=IDX_ND_B1, batch_dims=1),
                             lambda: tf().gather_nd(X, IDX_ND_B1, batch_dims=1)),
    "scatter_add_duplicates": (
        lambda x: mb().scatter(data=x, indices=IDX_DUP, updates=UPD, axis=-1, mode="add"),
        lambda: scatter_add_axis3(X, IDX_DUP, UPD)),
    "scatter_update": (
        lambda x: mb().scatter(data=x, indices=np.array([0, 2, 7], np.int32), updates=UPD, axis=3, mode="update"),
        lambda: t(X).index_copy(3, torch.tensor([0, 2, 7]), t(UPD))),
    "scatter_nd_add_duplicates": (lambda x: mb().scatter_nd(data=x, indices=IDX_ND_DUP, updates=UPD_ND, mode="add"),
                                  lambda: tf().tensor_scatter_nd_add(X, IDX_ND_DUP, UPD_ND)),
    "scatter_along_axis_add": (
        lambda x: mb().scatter_along_axis(data=x, indices=IDX_ALONG, updates=UPD_ALONG, axis=2, mode="add"),
        lambda: t(X).scatter_add(2, t(IDX_ALONG).long(), t(UPD_ALONG))),
    "scatter_along_axis_max": (
        lambda x: mb().scatter_along_axis(data=x, indices=IDX_ALONG, updates=UPD_ALONG, axis=-2, mode="max"),
        lambda: t(X).scatter_reduce(2, t(IDX_ALONG).long(), t(UPD_ALONG), "amax")),
    # resize
    "upsample_nearest_x2": (lambda x: mb().upsample_nearest_neighbor(x=x, scale_factor_height=2, scale_factor_width=3),
                            lambda: F.interpolate(t(X), scale_factor=(2, 3), mode="nearest")),
    "upsample_bilinear_align_corners": (
        lambda x: mb().upsample_bilinear(x=x, scale_factor_height=2, scale_factor_width=2, align_corners=True),
        lambda: F.interpolate(t(X), scale_factor=2, mode="bilinear", align_corners=True)),
    "upsample_bilinear_half_pixel": (
        lambda x: mb().upsample_bilinear(x=x, scale_factor_height=2.0, scale_factor_width=1.5, align_corners=False),
        lambda: F.interpolate(t(X), size=(12, 12), mode="bilinear", align_corners=False)),
    "upsample_bilinear_legacy": (
        lambda x: mb().upsample_bilinear(x=x, scale_factor_height=2.0, scale_factor_width=2.0, align_corners=False,
                                         half_pixel_centers=False),
        lambda: nchw(tf().compat.v1.image.resize_bilinear(nhwc(X), (12, 16), align_corners=False,
                                                          half_pixel_centers=False))),
    "resize_bilinear_default": (
        lambda x: mb().resize_bilinear(x=x, target_size_height=5, target_size_width=11, sampling_mode="DEFAULT"),
        lambda: nchw(tf().compat.v1.image.resize_bilinear(nhwc(X), (5, 11), align_corners=False))),
    "resize_bilinear_strict_align": (
        lambda x: mb().resize_bilinear(x=x, target_size_height=5, target_size_width=11,
                                       sampling_mode="STRICT_ALIGN_CORNERS"),
        lambda: nchw(tf().compat.v1.image.resize_bilinear(nhwc(X), (5, 11), align_corners=True))),
    "resize_bilinear_unalign": (
        lambda x: mb().resize_bilinear(x=x, target_size_height=5, target_size_width=11,
                                       sampling_mode="UNALIGN_CORNERS"),
        lambda: nchw(tf().compat.v1.image.resize_bilinear(nhwc(X), (5, 11), half_pixel_centers=True))),
    "resize_nearest": (
        lambda x: mb().resize_nearest_neighbor(x=x, target_size_height=4, target_size_width=13),
        lambda: nchw(tf().compat.v1.image.resize_nearest_neighbor(nhwc(X), (4, 13)))),
    "resize_ios17_linear": (
        lambda x: mb().resize(x=x, shape=np.array([9, 5], np.int32), resized_dims=np.uint32(2),
                              sampling_mode="UNALIGN_CORNERS"),
        lambda: F.interpolate(t(X), size=(9, 5), mode="bilinear", align_corners=False)),
}


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    cases = {name: build for name, (build, _) in CASES.items()}
    return run_cases(cases, {"x": X}, tmp_path_factory.mktemp("tensor"), "tensor")


@pytest.mark.parametrize("case", list(CASES))
def test_matches_reference(outputs, case):
    want = expected(CASES, case)
    got = outputs[case]
    assert got.shape == want.shape
    if want.dtype.kind in "iu":
        assert np.array_equal(got, want)
    else:
        assert rel_l2(got, want) < 2e-6, rel_l2(got, want)


# The sampling-mode table of coremltools' resize_bilinear docstring: Xin = 2, a ramp [0, 1] along
# the width, so each output value is the sample position itself.
GRIDS = {
    ("UNALIGN_CORNERS", 5): [0.0, 0.1, 0.5, 0.9, 1.0],
    ("STRICT_ALIGN_CORNERS", 5): [0.0, 0.25, 0.5, 0.75, 1.0],
    ("ALIGN_CORNERS", 5): [0.0, 0.25, 0.5, 0.75, 1.0],
    ("DEFAULT", 5): [0.0, 0.4, 0.8, 1.0, 1.0],
    ("OFFSET_CORNERS", 5): [0.1, 0.3, 0.5, 0.7, 0.9],
    ("UNALIGN_CORNERS", 6): [0.0, 0.0, 1 / 3, 2 / 3, 1.0, 1.0],
    ("STRICT_ALIGN_CORNERS", 6): [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
    ("DEFAULT", 6): [0.0, 1 / 3, 2 / 3, 1.0, 1.0, 1.0],
    ("OFFSET_CORNERS", 6): [1 / 12, 0.25, 5 / 12, 7 / 12, 0.75, 11 / 12],
}


def test_resize_bilinear_sampling_modes_match_mil_docs(tmp_path):
    ramp = np.tile(np.array([0.0, 1.0], np.float32), (1, 1, 2, 1))
    cases = {f"{mode}_{n}": (lambda x, mode=mode, n=n: mb().resize_bilinear(
        x=x, target_size_height=2, target_size_width=n, sampling_mode=mode)) for mode, n in GRIDS}
    out = run_cases(cases, {"x": ramp}, tmp_path, "grids")
    for (mode, n), grid in GRIDS.items():
        np.testing.assert_allclose(out[f"{mode}_{n}"][0, 0, 0], grid, atol=1e-6, err_msg=mode)
