"""Resize and Upsample over the two spatial dims of NCHW tensors.

ONNX defines each output pixel by a source coordinate (coordinate_transformation_mode) and then
rounds it (nearest) or interpolates (linear); MIL offers a few fixed samplers. Instead of a name-to-
name table, the lowering computes ONNX's source coordinates for the actual sizes and picks the MIL
op that reproduces them:

- integer factors: upsample_nearest_neighbor / upsample_bilinear, the ops coremltools' own torch
  frontend uses; they also take run-time spatial dims (checked on a sample size, since with an
  integer factor the pattern repeats);
- other sizes, nearest: two gathers with ONNX's exact source-index tables;
- other sizes, linear: resize_bilinear with the sampling_mode whose documented grid equals ONNX's
  clamped coordinates, else two matmuls with ONNX's exact interpolation matrices.
cubic is refused: MIL has no bicubic sampler.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil.types.symbolic import is_symbolic

from bridge.converters.coreml.context import attrs
from bridge.converters.coreml.registry import register

SAMPLE = 7  # stands in for a run-time spatial size when checking an integer-factor pattern


@dataclass(frozen=True)
class Axis:
    """One spatial axis: sizes (None when known only at run time) and ONNX's scale for coordinates."""

    n_in: int | None
    n_out: int | None
    scale: float

    def factor(self) -> int | None:
        """The integer upsampling factor, when there is one."""
        k = self.scale if self.n_in is None else self.n_out / self.n_in
        return int(k) if k >= 1 and k == int(k) and (self.n_in is None or self.scale == k) else None

    def sampled(self) -> Axis:
        """A static stand-in with the same integer-factor pattern."""
        return self if self.n_in is not None else Axis(SAMPLE, SAMPLE * self.factor(), self.scale)


@dataclass(frozen=True)
class Plan:
    mode: str  # nearest | linear
    coordinates: str  # ONNX coordinate_transformation_mode
    rounding: str  # ONNX nearest_mode, or "simple" (opsets before 11)
    axes: tuple[Axis, Axis]


# ONNX semantics --------------------------------------------------------------------------------
def source_coordinates(mode: str, a: Axis) -> np.ndarray:
    """ONNX's x_original per output index, in float32 like onnxruntime."""
    i, scale = np.arange(a.n_out, dtype=np.float32), np.float32(a.scale)
    if mode == "align_corners":
        return i * np.float32(a.n_in - 1) / np.float32(a.n_out - 1) if a.n_out > 1 else np.zeros(1, np.float32)
    if mode == "asymmetric":
        return i / scale
    if mode == "tf_half_pixel_for_nn":
        return (i + 0.5) / scale
    if mode == "pytorch_half_pixel" and a.n_out == 1:
        return np.zeros(1, np.float32)
    if mode == "half_pixel_symmetric":
        offset = a.n_in / 2 * (1 - a.n_out / (a.scale * a.n_in))
        return np.float32(offset) + (i + 0.5) / scale - 0.5
    return (i + 0.5) / scale - 0.5  # half_pixel, pytorch_half_pixel


def nearest_indices(plan: Plan, a: Axis) -> np.ndarray:
    x = source_coordinates(plan.coordinates, a)
    rounding = plan.rounding
    if rounding == "simple":  # onnxruntime's rule for Resize-10 and Upsample
        rounding = "ceil" if a.scale < 1 else "floor"
    rounded = {"round_prefer_floor": np.ceil(x - 0.5), "round_prefer_ceil": np.floor(x + 0.5),
               "floor": np.floor(x), "ceil": np.ceil(x)}[rounding]
    return np.clip(rounded, 0, a.n_in - 1).astype(np.int32)


def linear_matrix(plan: Plan, a: Axis) -> np.ndarray:
    """(n_out, n_in) weights: each output row blends the two inputs around its clamped coordinate."""
    x = np.clip(source_coordinates(plan.coordinates, a), 0, a.n_in - 1).astype(np.float64)
    lo = np.floor(x).astype(int)
    hi, rows = np.minimum(lo + 1, a.n_in - 1), np.arange(a.n_out)
    m = np.zeros((a.n_out, a.n_in), np.float32)
    np.add.at(m, (rows, lo), 1 - (x - lo))
    np.add.at(m, (rows, hi), x - lo)
    return m


# MIL semantics (from the resize_bilinear documentation) ---------------------------------------
def mil_grid(sampling_mode: str, a: Axis) -> np.ndarray | None:
    i, n_in, n_out = np.arange(a.n_out, dtype=np.float64), a.n_in, a.n_out
    if sampling_mode == "UNALIGN_CORNERS":
        grid = (i + 0.5) * n_in / n_out - 0.5
    elif n_out == 1:
        return None  # the documentation leaves the other modes undefined for one output
    elif sampling_mode == "STRICT_ALIGN_CORNERS":
        grid = i * (n_in - 1) / (n_out - 1)
    else:  # DEFAULT
        grid = i * (n_in - n_in / n_out) / (n_out - 1)
    return np.clip(grid, 0, n_in - 1)


def matching_sampler(plan: Plan, axes) -> str | None:
    """The MIL sampling_mode reproducing ONNX's linear coordinates on every axis, if any."""
    for mode in ("UNALIGN_CORNERS", "STRICT_ALIGN_CORNERS", "DEFAULT"):
        grids = [mil_grid(mode, a) for a in axes]
        if all(g is not None and np.allclose(g, np.clip(source_coordinates(plan.coordinates, a), 0, a.n_in - 1),
                                             atol=1e-4) for g, a in zip(grids, axes, strict=True)):
            return mode
    return None


# upsample_bilinear flags per sampler (half_pixel_centers needs iOS16)
UPSAMPLE_BILINEAR = {"STRICT_ALIGN_CORNERS": {"align_corners": True}, "UNALIGN_CORNERS": {"align_corners": False},
                     "DEFAULT": {"align_corners": False, "half_pixel_centers": False}}


# lowering --------------------------------------------------------------------------------------
def _nearest(ctx, node, x, plan: Plan):
    ks = [a.factor() for a in plan.axes]
    if all(ks) and all(np.array_equal(nearest_indices(plan, a.sampled()), np.arange(a.sampled().n_out) // k)
                       for a, k in zip(plan.axes, ks, strict=True)):
        return mb.upsample_nearest_neighbor(x=x, scale_factor_height=ks[0], scale_factor_width=ks[1],
                                            name=ctx.name(node))
    if any(a.n_in is None for a in plan.axes):
        raise ctx.unsupported(node, "run-time spatial dims need an integer factor in floor-equivalent modes")
    tables = [(axis, nearest_indices(plan, a)) for axis, a in zip((2, 3), plan.axes, strict=True)]
    tables = [(axis, t) for axis, t in tables if not np.array_equal(t, np.arange(x.shape[axis]))]
    for j, (axis, t) in enumerate(tables):
        x = mb.gather(x=x, indices=t, axis=axis, **_last(ctx, node, j, len(tables)))
    return x if tables else mb.identity(x=x, name=ctx.name(node))


def _linear(ctx, node, x, plan: Plan):
    ks = [a.factor() for a in plan.axes]
    if all(ks):
        sampler = matching_sampler(plan, [a.sampled() for a in plan.axes])
        if sampler is not None:
            return mb.upsample_bilinear(x=x, scale_factor_height=ks[0], scale_factor_width=ks[1],
                                        name=ctx.name(node), **UPSAMPLE_BILINEAR[sampler])
    if any(a.n_in is None for a in plan.axes):
        raise ctx.unsupported(node, "run-time spatial dims need an integer factor")
    sampler = matching_sampler(plan, plan.axes)
    if sampler is not None:
        h, w = (a.n_out for a in plan.axes)
        return mb.resize_bilinear(x=x, target_size_height=h, target_size_width=w, sampling_mode=sampler,
                                  name=ctx.name(node))
    return _linear_by_matmul(ctx, node, x, plan)


def _linear_by_matmul(ctx, node, x, plan: Plan):
    """Exact ONNX linear resize for samplers MIL lacks (e.g. half_pixel with a scale that is not
    out/in): rows = A_h @ x, then @ A_w^T. Costs two dense (out x in) constant matrices."""
    h, w = (linear_matrix(plan, a) for a in plan.axes)
    rows = mb.matmul(x=h, y=x)
    return mb.matmul(x=rows, y=np.ascontiguousarray(w.T), name=ctx.name(node))


def _last(ctx, node, j: int, n: int) -> dict:
    """Only the op that produces the node's output takes its name."""
    return {"name": ctx.name(node)} if j == n - 1 else {}


def _fold(data: np.ndarray, plan: Plan) -> np.ndarray:
    """Resize a constant with numpy, using the same ONNX tables as the lowering."""
    if plan.mode == "nearest":
        h, w = (nearest_indices(plan, a) for a in plan.axes)
        return data[:, :, h][:, :, :, w]
    h, w = (linear_matrix(plan, a) for a in plan.axes)
    return np.einsum("oh,nchw,pw->ncop", h, data.astype(np.float32), w).astype(data.dtype)


# parsing ---------------------------------------------------------------------------------------
def _axes(ctx, node, shape, scales, sizes) -> tuple[Axis, Axis]:
    dims = [None if is_symbolic(d) else int(d) for d in shape]
    if sizes is not None and len(sizes):
        keeps = all(s == d for s, d in zip(sizes[:2], shape[:2], strict=True))  # symbols compare too
        if not keeps or None in dims[2:] or any(is_symbolic(s) for s in sizes[2:]):
            raise ctx.unsupported(node, "sizes must keep batch and channels, over static spatial dims")
        return tuple(Axis(d, int(s), int(s) / d) for d, s in zip(dims[2:], sizes[2:], strict=True))
    if scales is None or not len(scales):
        raise ctx.unsupported(node, "neither scales nor sizes is given")
    scales = [float(s) for s in scales]
    if scales[:2] != [1.0, 1.0]:
        raise ctx.unsupported(node, "only the spatial (H, W) dims can be resized")
    return tuple(Axis(d, None if d is None else int(np.float32(d) * np.float32(s)), s)
                 for d, s in zip(dims[2:], scales[2:], strict=True))


def _resize(ctx, node, scales, sizes, coordinates: str, rounding: str):
    a = attrs(node)
    mode = {"bilinear": "linear"}.get(a.get("mode", "nearest"), a.get("mode", "nearest"))
    x = ctx.value(node.input[0])
    if len(x.shape) != 4:
        raise ctx.unsupported(node, f"rank {len(x.shape)}: only 4-D NCHW resizes are lowered")
    if mode not in ("nearest", "linear"):
        raise ctx.unsupported(node, f"{mode} interpolation: MIL has no such sampler")
    if coordinates == "tf_crop_and_resize" or a.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise ctx.unsupported(node, "tf_crop_and_resize and keep_aspect_ratio_policy are not lowered")
    plan = Plan(mode, coordinates, rounding, _axes(ctx, node, x.shape, scales, sizes))
    if a.get("antialias", 0) and mode == "linear" and any(ax.scale < 1 for ax in plan.axes):
        raise ctx.unsupported(node, "antialiased downsampling")
    if isinstance(x, np.ndarray):
        return ctx.set(node.output[0], _fold(x, plan))
    lower = _nearest if mode == "nearest" else _linear
    ctx.set(node.output[0], lower(ctx, node, ctx.var(node.input[0]), plan))


def _full_rank(values, axes, fill):
    """Opset 18's `axes` lists which dims `scales`/`sizes` cover; the rest keep `fill`."""
    if values is None or not len(values) or axes is None:
        return values
    full = list(fill)
    for axis, v in zip(axes, values, strict=True):
        full[axis % len(full)] = v
    return full


def _param(ctx, node, index: int):
    """scales or sizes: a constant, or for sizes built from Shape over a run-time batch, MIL's
    symbolic value (e.g. [batch, 3, 64, 64]); None when the input is absent."""
    if len(node.input) <= index or not node.input[index]:
        return None
    v = ctx.value(node.input[index])
    known = v if isinstance(v, np.ndarray) else (v.val if v.val is not None else v.sym_val)
    if known is None:
        raise ctx.unsupported(node, "scales and sizes must be known at conversion time")
    return np.asarray(known).reshape(-1)


@register("Resize", since=10)
def resize_v10(ctx, node):
    _resize(ctx, node, _param(ctx, node, 1), None, "asymmetric", "simple")


@register("Resize", since=11)
def resize_v11(ctx, node):
    a = attrs(node)
    scales, sizes = _param(ctx, node, 2), _param(ctx, node, 3)
    shape = ctx.value(node.input[0]).shape
    scales = _full_rank(scales, a.get("axes"), [1.0] * len(shape))
    sizes = _full_rank(sizes, a.get("axes"), shape)
    _resize(ctx, node, scales, sizes, a.get("coordinate_transformation_mode", "half_pixel"),
            a.get("nearest_mode", "round_prefer_floor"))


@register("Upsample", since=7)
def upsample_v7(ctx, node):
    _resize(ctx, node, attrs(node)["scales"], None, "asymmetric", "simple")


@register("Upsample", since=9)
def upsample_v9(ctx, node):
    _resize(ctx, node, _param(ctx, node, 1), None, "asymmetric", "simple")
