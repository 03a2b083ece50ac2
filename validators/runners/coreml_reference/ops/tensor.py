"""Shape and tensor movement: reshape, transpose, slicing, padding, concat, tiling, sorting,
depth/space rearrangements.

Reused from coremltools where its value_inference is pure indexing and exact for every input
(slice_by_index with its masks, pad modes, split sizes, ...). Written out where it is not:
squeeze (wrong rank when every axis goes), concat (gives up on tensors over 10 elements, no
`interleave`), band_part and range_1d (Python loops, size caps), cumsum (breaks on `exclusive`),
argsort/topk (unstable sort: ties must keep index order), and reshape (its value_inference redoes
type inference on every call; the opset-dependent rule for 0s is still coremltools').
"""

from __future__ import annotations

import numpy as np

from . import op
from .reuse import reuse

reuse("expand_dims", "transpose", "reverse", "slice_by_index", "slice_by_size", "tile", "flatten2d", "split", "stack",
      "identity", copies_values=True)
reuse("slice_update", "pad", "fill", "fill_like", "non_zero", "shape")


@op("reshape", copies_values=True)
def reshape(mil_op, x, shape):
    """A 0 in `shape` copies a dim of x; which one depends on the opset (iOS15: same position,
    iOS17: aligned from the right), so the op class's own `replace_zeros_in_shape` decides."""
    target = type(mil_op).replace_zeros_in_shape(list(x.shape), [int(s) for s in np.ravel(shape)])
    return x.reshape(target)


@op("squeeze", copies_values=True)
def squeeze(x, axes=None):
    return np.squeeze(x) if axes is None else np.squeeze(x, axis=tuple(int(a) for a in np.ravel(axes)))


@op("concat", copies_values=True)
def concat(values, axis, interleave=False):
    axis = int(axis) % values[0].ndim
    if not interleave:
        return np.concatenate(values, axis=axis)
    stacked = np.stack(values, axis=axis + 1)  # element i of every input, then element i + 1
    return stacked.reshape(*values[0].shape[:axis], -1, *values[0].shape[axis + 1:])


@op("band_part")
def band_part(x, lower=-1, upper=-1):
    m, n = x.shape[-2:]
    offset = np.arange(m)[:, None] - np.arange(n)[None, :]  # row - column
    keep = ((lower < 0) | (offset <= lower)) & ((upper < 0) | (-offset <= upper))
    return np.where(keep, x, np.zeros_like(x))


@op("range_1d")
def range_1d(start, end, step):
    return np.arange(start, end, step)


@op("cumsum")
def cumsum(x, axis=0, exclusive=False, reverse=False):
    y = np.flip(x, axis) if reverse else x
    y = np.cumsum(y, axis=int(axis))
    if exclusive:
        y = y - (np.flip(x, axis) if reverse else x)
    return np.flip(y, axis) if reverse else y


def _stable_order(x, axis: int, ascending: bool) -> np.ndarray:
    """Sort indices; ties keep index order whichever way we sort."""
    return np.argsort(x if ascending else -x, axis=axis, kind="stable")


@op("argsort")
def argsort(x, axis=-1, ascending=False):
    return _stable_order(x, int(axis), bool(ascending))


@op("topk")
def topk(x, k=1, axis=-1, ascending=False, sort=True, return_indices=True, output_indices_dtype="int32"):
    idx = np.take(_stable_order(x, int(axis), bool(ascending)), np.arange(int(k)), axis=int(axis))
    return np.take_along_axis(x, idx, axis=int(axis)), idx


@op("one_hot")
def one_hot(indices, one_hot_vector_size, axis=-1, on_value=1, off_value=0):
    hot = indices[..., None] == np.arange(int(one_hot_vector_size))
    out = np.where(hot, on_value, off_value)
    return np.moveaxis(out, -1, int(axis) % out.ndim)


@op("pixel_shuffle")
def pixel_shuffle(x, upscale_factor):
    """PyTorch's PixelShuffle (channel-major: C, then the r x r block)."""
    n, c, h, w = x.shape
    r = int(upscale_factor)
    return x.reshape(n, c // r**2, r, r, h, w).transpose(0, 1, 4, 2, 5, 3).reshape(n, c // r**2, h * r, w * r)


@op("pixel_unshuffle")
def pixel_unshuffle(x, downscale_factor):
    n, c, h, w = x.shape
    r = int(downscale_factor)
    return x.reshape(n, c, h // r, r, w // r, r).transpose(0, 1, 3, 5, 2, 4).reshape(n, c * r**2, h // r, w // r)


@op("depth_to_space")
def depth_to_space(x, block_size):
    """TensorFlow's DepthToSpace in NCHW (block-major: the r x r block, then C), which is how
    coremltools' TF frontend lowers DepthToSpace onto this op."""
    n, c, h, w = x.shape
    b = int(block_size)
    return x.reshape(n, b, b, c // b**2, h, w).transpose(0, 3, 4, 1, 5, 2).reshape(n, c // b**2, h * b, w * b)


@op("space_to_depth")
def space_to_depth(x, block_size):
    n, c, h, w = x.shape
    b = int(block_size)
    return x.reshape(n, c, h // b, b, w // b, b).transpose(0, 3, 5, 1, 2, 4).reshape(n, c * b**2, h // b, w // b)


@op("space_to_batch")
def space_to_batch(x, block_shape, paddings):
    """TensorFlow's SpaceToBatchND on NCHW: output batch index = (row offset * bw + col offset) * N + n."""
    bh, bw = (int(v) for v in np.ravel(block_shape))
    x = np.pad(x, [(0, 0), (0, 0), *(tuple(int(v) for v in p) for p in np.reshape(paddings, (2, 2)))])
    n, c, h, w = x.shape
    x = x.reshape(n, c, h // bh, bh, w // bw, bw).transpose(3, 5, 0, 1, 2, 4)
    return x.reshape(bh * bw * n, c, h // bh, w // bw)


@op("batch_to_space")
def batch_to_space(x, block_shape, crops):
    bh, bw = (int(v) for v in np.ravel(block_shape))
    nb, c, h, w = x.shape
    n = nb // (bh * bw)
    x = x.reshape(bh, bw, n, c, h, w).transpose(2, 3, 4, 0, 5, 1).reshape(n, c, h * bh, w * bw)
    (t, b), (left, right) = (tuple(int(v) for v in p) for p in np.reshape(crops, (2, 2)))
    return x[:, :, t:h * bh - b, left:w * bw - right]


@op("crop")
def crop(x, crop_height, crop_width):
    (t, b), (left, right) = (int(v) for v in np.ravel(crop_height)), (int(v) for v in np.ravel(crop_width))
    return x[..., t:x.shape[-2] - b, left:x.shape[-1] - right]
