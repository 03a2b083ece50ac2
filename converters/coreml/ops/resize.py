"""Resize and Upsample over the two spatial dims of NCHW tensors.

ONNX defines each output pixel by a source coordinate (coordinate_transformation_mode) and then
rounds it (nearest) or interpolates (linear, cubic); MIL offers a few fixed samplers. Instead of a
name-to-name table, the lowering computes ONNX's source coordinates for the actual sizes and picks
the MIL op that reproduces them:

- integer factors: upsample_nearest_neighbor / upsample_bilinear, the ops coremltools' own torch
  frontend uses; they also take run-time spatial dims (checked on a sample size, since with an
  integer factor the pattern repeats);
- other sizes, nearest: two gathers with ONNX's exact source-index tables;
- other sizes, linear: resize_bilinear with the sampling_mode whose documented grid equals ONNX's
  clamped coordinates, else two matmuls with ONNX's exact interpolation matrices.
- cubic (any cubic_coeff_a, exclude_outside), antialiased linear and cubic: MIL has no such
  sampler, but each is a fixed linear map per axis, so two matmuls with its (out x in) weights,
  computed here as onnxruntime computes them.
- tf_crop_and_resize: the same tables over the region of interest, and a select that puts
  extrapolation_value where a coordinate falls outside the input.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil import types
from coremltools.converters.mil.mil.types.symbolic import is_symbolic

from bridge.converters.coreml.context import attrs
from bridge.converters.coreml.registry import register

SAMPLE = 7  # stands in for a run-time spatial size when checking an integer-factor pattern


@dataclass(frozen=True)
class Axis:
    """One spatial axis: sizes (None when known only at run time), ONNX's scale for coordinates and,
    for tf_crop_and_resize, the region of interest (start, end) in normalized input coordinates."""

    n_in: int | None
    n_out: int | None
    scale: float
    roi: tuple[float, float] = (0.0, 1.0)

    def factor(self) -> int | None:
        """The integer upsampling factor, when there is one."""
        k = self.scale if self.n_in is None else self.n_out / self.n_in
        return int(k) if k >= 1 and k == int(k) and (self.n_in is None or self.scale == k) else None

    def sampled(self) -> Axis:
        """A static stand-in with the same integer-factor pattern."""
        return self if self.n_in is not None else Axis(SAMPLE, SAMPLE * self.factor(), self.scale)


@dataclass(frozen=True)
class Plan:
    mode: str  # nearest | linear | cubic
    coordinates: str  # ONNX coordinate_transformation_mode
    rounding: str  # ONNX nearest_mode, or "simple" (opsets before 11)
    axes: tuple[Axis, Axis]
    cubic_a: float = -0.75
    exclude_outside: bool = False
    antialias: bool = False
    extrapolation: float = 0.0

    def plain_linear(self) -> bool:
        """Two-tap linear interpolation over clamped coordinates: what MIL's samplers can do."""
        return self.mode == "linear" and not self.antialias and self.coordinates != "tf_crop_and_resize"


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
    if mode == "tf_crop_and_resize":
        start, end = a.roi
        if a.n_out == 1:
            return np.full(1, 0.5 * (start + end) * (a.n_in - 1), np.float32)
        return np.float32(start * (a.n_in - 1)) + i * np.float32((end - start) * (a.n_in - 1) / (a.n_out - 1))
    return (i + 0.5) / scale - 0.5  # half_pixel, pytorch_half_pixel


def inside(plan: Plan, a: Axis) -> np.ndarray:
    """Per output index, whether tf_crop_and_resize reads the input (else: extrapolation_value)."""
    x = source_coordinates(plan.coordinates, a)
    if plan.coordinates != "tf_crop_and_resize":
        return np.ones(a.n_out, bool)
    return (x >= 0) & (x <= a.n_in - 1)


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


def cubic_kernel(t: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel with coefficient a (ONNX's cubic_coeff_a)."""
    t = np.abs(t)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((t - 5) * t + 8) * t * a - 4 * a
    return np.where(t < 1, near, np.where(t < 2, far, 0.0))


def triangle_kernel(t: np.ndarray) -> np.ndarray:
    return np.maximum(0.0, 1 - np.abs(t))


def weight_matrix(plan: Plan, a: Axis) -> np.ndarray:
    """(n_out, n_in) interpolation weights for one axis, for every interpolating mode. Taps beyond
    the input read its edge, or with exclude_outside are dropped and the rest renormalized."""
    if plan.plain_linear():
        return linear_matrix(plan, a)
    x = source_coordinates(plan.coordinates, a).astype(np.float64)
    m = np.zeros((a.n_out, a.n_in), np.float64)
    for row, xo in enumerate(x):
        taps, w = _antialiased_taps(plan, a, xo) if plan.antialias else _taps(plan, xo)
        if plan.exclude_outside:
            w = np.where((taps >= 0) & (taps < a.n_in), w, 0.0)
        total = w.sum()
        if plan.antialias or plan.exclude_outside:
            w = w / total if total not in (0.0, 1.0) else w
        keep = (taps >= 0) & (taps < a.n_in) if plan.exclude_outside else np.ones(len(taps), bool)
        np.add.at(m[row], np.clip(taps[keep], 0, a.n_in - 1), w[keep])
    return m.astype(np.float32)


def _taps(plan: Plan, x: float) -> tuple[np.ndarray, np.ndarray]:
    """The input indices around coordinate x and their weights: 2 for linear, 4 for cubic."""
    base = int(np.floor(x))
    if plan.mode == "linear":  # tf_crop_and_resize: unclamped coordinates (outside ones are masked)
        taps = np.arange(base, base + 2)
        return taps, triangle_kernel(taps - x)
    taps = np.arange(base - 1, base + 3)
    return taps, cubic_kernel(taps - x, plan.cubic_a)


def _antialiased_taps(plan: Plan, a: Axis, x: float) -> tuple[np.ndarray, np.ndarray]:
    """Antialiasing widens the kernel by in/out when shrinking (onnxruntime's Pillow-style filter):
    taps within the stretched support around x, weighed by the kernel at (tap - x) * out/in."""
    stretch = max(1.0 / float(np.float32(a.scale)), 1.0)
    support = (1.0 if plan.mode == "linear" else 2.0) * stretch
    centre = x + 0.5
    taps = np.arange(int(np.floor(centre - support + 0.5)), int(np.floor(centre + support + 0.5)))
    t = (taps - x) / stretch
    return taps, triangle_kernel(t) if plan.mode == "linear" else cubic_kernel(t, plan.cubic_a)


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
    repeats = all(ks) and plan.coordinates != "tf_crop_and_resize" and all(
        np.array_equal(nearest_indices(plan, a.sampled()), np.arange(a.sampled().n_out) // k)
        for a, k in zip(plan.axes, ks, strict=True))
    if repeats:
        return mb.upsample_nearest_neighbor(x=x, scale_factor_height=ks[0], scale_factor_width=ks[1],
                                            name=ctx.name(node))
    if any(a.n_in is None for a in plan.axes):
        raise ctx.unsupported(node, "run-time spatial dims need an integer factor in floor-equivalent modes")
    tables = [(axis, nearest_indices(plan, a)) for axis, a in zip((2, 3), plan.axes, strict=True)]
    tables = [(axis, t) for axis, t in tables if not np.array_equal(t, np.arange(x.shape[axis]))]
    if plan.coordinates == "tf_crop_and_resize":
        for axis, t in tables:
            x = mb.gather(x=x, indices=t, axis=axis)
        return _extrapolate(ctx, node, x, plan)
    for j, (axis, t) in enumerate(tables):
        x = mb.gather(x=x, indices=t, axis=axis, **_last(ctx, node, j, len(tables)))
    return x if tables else mb.identity(x=x, name=ctx.name(node))


def _linear(ctx, node, x, plan: Plan):
    if not plan.plain_linear():
        if any(a.n_in is None for a in plan.axes):
            raise ctx.unsupported(node, "cubic, antialias and tf_crop_and_resize need static spatial dims")
        return _by_matmul(ctx, node, x, plan)
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
    return _by_matmul(ctx, node, x, plan)


def _by_matmul(ctx, node, x, plan: Plan):
    """Exact ONNX interpolation for samplers MIL lacks (e.g. half_pixel with a scale that is not
    out/in, cubic, antialias): rows = A_h @ x, then @ A_w^T. Costs two dense (out x in) constant
    matrices; tf_crop_and_resize then puts extrapolation_value outside the input."""
    dtype = types.nptype_from_builtin(x.dtype)
    h, w = (weight_matrix(plan, a).astype(dtype) for a in plan.axes)
    rows = mb.matmul(x=h, y=x)
    cropped = plan.coordinates == "tf_crop_and_resize"
    y = mb.matmul(x=rows, y=np.ascontiguousarray(w.T), **({} if cropped else {"name": ctx.name(node)}))
    return _extrapolate(ctx, node, y, plan) if cropped else y


def _extrapolate(ctx, node, y, plan: Plan):
    valid = np.outer(*(inside(plan, a) for a in plan.axes))
    fill = np.asarray(plan.extrapolation, types.nptype_from_builtin(y.dtype))
    return mb.select(cond=valid, a=y, b=fill, name=ctx.name(node))


def _last(ctx, node, j: int, n: int) -> dict:
    """Only the op that produces the node's output takes its name."""
    return {"name": ctx.name(node)} if j == n - 1 else {}


def _fold(data: np.ndarray, plan: Plan) -> np.ndarray:
    """Resize a constant with numpy, using the same ONNX tables as the lowering."""
    if plan.mode == "nearest":
        h, w = (nearest_indices(plan, a) for a in plan.axes)
        out = data[:, :, h][:, :, :, w]
    else:
        h, w = (weight_matrix(plan, a) for a in plan.axes)
        out = np.einsum("oh,nchw,pw->ncop", h, data.astype(np.float32), w).astype(data.dtype)
    valid = np.outer(*(inside(plan, a) for a in plan.axes))
    return np.where(valid, out, np.asarray(plan.extrapolation, out.dtype))


# parsing ---------------------------------------------------------------------------------------
def _axes(ctx, node, shape, scales, sizes, scale: float | None = None) -> tuple[Axis, Axis]:
    """`scale`: keep_aspect_ratio_policy's one scale for every axis (with sizes)."""
    dims = [None if is_symbolic(d) else int(d) for d in shape]
    if sizes is not None and len(sizes):
        keeps = all(s == d for s, d in zip(sizes[:2], shape[:2], strict=True))  # symbols compare too
        if not keeps or None in dims[2:] or any(is_symbolic(s) for s in sizes[2:]):
            raise ctx.unsupported(node, "sizes must keep batch and channels, over static spatial dims")
        return tuple(Axis(d, int(s), int(s) / d if scale is None else scale)
                     for d, s in zip(dims[2:], sizes[2:], strict=True))
    if scales is None or not len(scales):
        raise ctx.unsupported(node, "neither scales nor sizes is given")
    scales = [float(s) for s in scales]
    if scales[:2] != [1.0, 1.0]:
        raise ctx.unsupported(node, "only the spatial (H, W) dims can be resized")
    return tuple(Axis(d, None if d is None else int(np.float32(d) * np.float32(s)), s)
                 for d, s in zip(dims[2:], scales[2:], strict=True))


def _resize(ctx, node, scales, sizes, coordinates: str, rounding: str, roi=None, scale: float | None = None):
    a = attrs(node)
    mode = {"bilinear": "linear"}.get(a.get("mode", "nearest"), a.get("mode", "nearest"))
    x = ctx.value(node.input[0])
    if len(x.shape) != 4:
        raise ctx.unsupported(node, f"rank {len(x.shape)}: only 4-D NCHW resizes are lowered")
    if mode not in ("nearest", "linear", "cubic"):
        raise ctx.unsupported(node, f"mode={mode}")
    axes = _axes(ctx, node, x.shape, scales, sizes, scale)
    if coordinates == "tf_crop_and_resize":
        if roi is None:
            raise ctx.unsupported(node, "tf_crop_and_resize without a region of interest")
        axes = tuple(Axis(ax.n_in, ax.n_out, ax.scale, (float(roi[i]), float(roi[i + 4])))
                     for ax, i in zip(axes, (2, 3), strict=True))
    antialias = bool(a.get("antialias", 0)) and mode != "nearest"
    if antialias and coordinates == "tf_crop_and_resize":
        raise ctx.unsupported(node, ANTIALIASED_CROP)
    plan = Plan(mode, coordinates, rounding, axes, cubic_a=float(a.get("cubic_coeff_a", -0.75)),
                exclude_outside=bool(a.get("exclude_outside", 0)), antialias=antialias,
                extrapolation=float(a.get("extrapolation_value", 0.0)))
    if isinstance(x, np.ndarray):
        return ctx.set(node.output[0], _fold(x, plan))
    lower = _nearest if mode == "nearest" else _linear
    ctx.set(node.output[0], lower(ctx, node, ctx.var(node.input[0]), plan))


ANTIALIASED_CROP = "antialias=1 with tf_crop_and_resize (onnxruntime masks by a shifted coordinate)"


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
    policy = a.get("keep_aspect_ratio_policy", "stretch")
    scale = None
    if policy != "stretch" and sizes is not None and len(sizes):
        sizes, scale = _keep_aspect_ratio(ctx, node, sizes, a.get("axes"), shape, policy)
    scales = _full_rank(scales, a.get("axes"), [1.0] * len(shape))
    sizes = _full_rank(sizes, a.get("axes"), shape)
    coordinates = a.get("coordinate_transformation_mode", "half_pixel")
    roi = _roi(ctx, node, a.get("axes"), len(shape)) if coordinates == "tf_crop_and_resize" else None
    _resize(ctx, node, scales, sizes, coordinates, a.get("nearest_mode", "round_prefer_floor"), roi, scale)


def _keep_aspect_ratio(ctx, node, sizes, axes, shape, policy: str):
    """One scale for every covered axis, the largest that fits `sizes` (not_larger) or the smallest
    that covers them (not_smaller); each covered size becomes round(scale * input size)."""
    covered = [a % len(shape) for a in axes] if axes is not None else list(range(len(shape)))
    dims = [shape[a] for a in covered]
    if any(is_symbolic(d) for d in dims):
        raise ctx.unsupported(node, "keep_aspect_ratio_policy over run-time dims")
    scale = (min if policy == "not_larger" else max)(int(s) / int(d) for s, d in zip(sizes, dims, strict=True))
    return np.asarray([int(np.floor(scale * int(d) + 0.5)) for d in dims]), scale


def _roi(ctx, node, axes, rank: int):
    """tf_crop_and_resize's region as [starts..., ends...] over every dim (opset 18's `axes`
    lists the dims it covers; the others span the whole input)."""
    roi = _param(ctx, node, 1)
    if roi is None or not len(roi):
        return None
    if axes is None:
        return [float(v) for v in roi]
    starts, ends = [0.0] * rank, [1.0] * rank
    for i, axis in enumerate(axes):
        starts[axis % rank], ends[axis % rank] = float(roi[i]), float(roi[i + len(axes)])
    return starts + ends


@register("Upsample", since=7)
def upsample_v7(ctx, node):
    _resize(ctx, node, attrs(node)["scales"], None, "asymmetric", "simple")


@register("Upsample", since=9)
def upsample_v9(ctx, node):
    _resize(ctx, node, _param(ctx, node, 1), None, "asymmetric", "simple")
