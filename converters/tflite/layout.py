"""Which layout each tensor has in the TFLite artifact, and the permutation from the source's.

onnx2tf turns channel-first tensors channel-last. Android camera pipelines feed NHWC, so by default
4-D image inputs become NHWC (`--tflite-layout nhwc`); everything else keeps the source layout.
A Keras source is already NHWC: onnx2tf must be told so, or it transposes it again (seen: a
[1,96,96,3] input became [1,96,3,96]).

Outputs are onnx2tf's choice, and 2.x makes it per graph: after a conv or pool an output comes out
channel-last, while an elementwise-only graph keeps it channel-first. Where the output's shape fits
only one layout that is the answer; where it fits several (C == H == W, or a dynamic axis that could
land on either side) the values decide: one probe sample through both the hub and the file
(`choose_by_values`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bridge.base.errors import ConversionError
from bridge.base.tensors import TensorSpec, image_channels

CHANNEL_LAST = {3: (0, 2, 1), 4: (0, 2, 3, 1), 5: (0, 2, 3, 4, 1)}


@dataclass(frozen=True)
class InputPlan:
    keep_channel_first: tuple[str, ...]  # onnx2tf: keep_ncw_or_nchw_or_ncdhw_input_names
    keep_channel_last: tuple[str, ...]  # onnx2tf: keep_nwc_or_nhwc_or_ndhwc_input_names
    perms: dict[str, tuple[int, ...] | None]
    layouts: dict[str, str]


def is_image(spec: TensorSpec, channel_last: bool) -> bool:
    return image_channels(spec, channel_last) is not None


def plan_inputs(inputs: tuple[TensorSpec, ...], framework: str, layout: str) -> InputPlan:
    channel_last_source = framework in ("keras", "tensorflow")
    first, last, perms, layouts = [], [], {}, {}
    for s in inputs:
        if len(s.shape) not in CHANNEL_LAST:
            perms[s.name], layouts[s.name] = None, "source"
        elif layout == "nhwc" and is_image(s, channel_last_source):
            if channel_last_source:
                last.append(s.name)
                perms[s.name] = None
            else:
                perms[s.name] = CHANNEL_LAST[4]
            layouts[s.name] = "NHWC"
        else:
            (last if channel_last_source else first).append(s.name)
            perms[s.name], layouts[s.name] = None, "source"
    return InputPlan(tuple(first), tuple(last), perms, layouts)


def permuted(shape: tuple, perm: tuple[int, ...] | None) -> tuple:
    return tuple(shape[p] for p in perm) if perm else tuple(shape)


def same_shape(tfl_shape: tuple, expected: tuple, dynamic: tuple[int, ...] = ()) -> bool:
    """`tfl_shape` (None or -1 for a dynamic dim) fits `expected`, where dims in `dynamic` may differ."""
    if len(tfl_shape) != len(expected):
        return False
    return all(a is None or a < 0 or a == b or i in dynamic
               for i, (a, b) in enumerate(zip(tfl_shape, expected, strict=True)))


def output_candidates(spec: TensorSpec, tfl_shape: tuple, dynamic: tuple[int, ...] = ()) -> list[tuple | None]:
    """The layouts (permutations from the source) `tfl_shape` is consistent with, source order first.

    With dynamic axes, layouts that put each of them on a dynamic dim of the file come first; the
    others stay as a last resort (a dynamic dim the converter froze)."""
    layouts = list(dict.fromkeys((None, CHANNEL_LAST.get(len(spec.shape)))))

    def fits(perm, strict: bool) -> bool:
        moved = tuple(perm.index(a) if perm else a for a in dynamic)
        if strict and any(i >= len(tfl_shape) or not (tfl_shape[i] is None or tfl_shape[i] < 0) for i in moved):
            return False
        return same_shape(tfl_shape, permuted(spec.shape, perm), moved)

    found = [p for p in layouts if fits(p, True)] if dynamic else []
    found += [p for p in layouts if p not in found and fits(p, False)]
    if not spec.shape and tuple(tfl_shape) == (1,):
        found = [None]  # onnx2tf writes a scalar as [1]; the comparison takes one value for one value
    if not found:
        raise ConversionError(f"onnx2tf turned output {spec.name} of shape {list(spec.shape)} into "
                              f"{list(tfl_shape)}, which no layout change explains", stage="tflite-convert")
    return found


def choose_by_values(name: str, candidates: list[tuple | None], tflite: np.ndarray, onnx: np.ndarray) -> tuple | None:
    """The candidate layout under which the file's output on a probe sample matches the hub's."""
    best, error = None, np.inf
    for perm in candidates:
        y = tflite.transpose(np.argsort(perm)) if perm else tflite
        if y.shape != onnx.shape:
            continue
        e = _rel_l2(y, onnx)
        if e < error:
            best, error = perm, e
    if error == np.inf:
        raise ConversionError(f"output {name}: the file's shape {list(tflite.shape)} fits the hub's "
                              f"{list(onnx.shape)} under no layout", stage="tflite-convert")
    return best


def _rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    a, b = np.nan_to_num(a), np.nan_to_num(b)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))
