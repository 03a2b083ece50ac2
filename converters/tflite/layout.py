"""Which layout each tensor has in the TFLite artifact, and the permutation from the source's.

onnx2tf turns channel-first tensors channel-last. Android camera pipelines feed NHWC, so by default
4-D image inputs become NHWC (`--tflite-layout nhwc`); everything else keeps the source layout.
A Keras source is already NHWC: onnx2tf must be told so, or it transposes it again (seen: a
[1,96,96,3] input became [1,96,3,96]).
"""

from __future__ import annotations

from dataclasses import dataclass

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


def same_shape(tf_shape: tuple, expected: tuple, dynamic: tuple[int, ...] = ()) -> bool:
    if len(tf_shape) != len(expected):
        return False
    return all(a is None or a == b or i in dynamic for i, (a, b) in enumerate(zip(tf_shape, expected, strict=True)))


def output_perm(spec: TensorSpec, tf_shape: tuple, channel_last: bool,
                dynamic: tuple[int, ...] = ()) -> tuple[int, ...] | None:
    """The output's layout in the TFLite file, from onnx2tf's per-output report and the shape.

    The report can be wrong: a [1, T, 16] output (T dynamic) came back [1, 16, T] reported as not
    channel-last. So both layouts are tried, the reported one first; with `dynamic` axes (of the
    source output), a layout fits first where each of them lands on a dynamic TFLite dim, which
    also tells apart the layouts a square export size makes look alike ([1, 16, 16] with T = 16).
    """
    last = CHANNEL_LAST.get(len(spec.shape))
    candidates = list(dict.fromkeys((last, None) if channel_last else (None, last)))

    def fits(perm, strict: bool) -> bool:
        moved = tuple(perm.index(a) if perm else a for a in dynamic)
        if strict and any(i >= len(tf_shape) or tf_shape[i] is not None for i in moved):
            return False
        return same_shape(tf_shape, permuted(spec.shape, perm), moved)

    for strict in ((True, False) if dynamic else (False,)):
        for perm in candidates:
            if fits(perm, strict):
                return perm
    raise ConversionError(f"onnx2tf turned output {spec.name} of shape {list(spec.shape)} into "
                          f"{list(tf_shape)}, which no layout change explains", stage="tflite-convert")
