"""A Core ML `int8-mixed` search step cut by `remix` from the first step's packages computes what a
conversion that never quantized the kept layers' activations computes (our activation hook skips
them; in the wide step weight compression skips their weights too: how the lane made `--coreml-keep`
files before the remix; now the lane cuts them out of the W8A8 file the same way as the search,
which is checked too).

The model (a real conversion through the lane, calibrated activation ranges from onnxruntime):
x -> `wide` (Conv, 96 channels: 2,592 weights, which int8 compresses) -> relu -> `head` (1x1 Conv),
plus `side` (1x1 Conv of x) added in by `join`. The two inputs of `join` are both dequantized and its
output quantized, so coremltools normalizes their scales (its
`distributive_quantized_binary_op_scale_normalization`): keeping `join` exercises the rescaling the
remix puts where it drops that pair; keeping `wide` exercises its int8 weights (kept as they are)
or its float16 ones (the wide step).
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from tests.converters.coreml.harness import graph

coremltools = pytest.importorskip("coremltools")

pytestmark = pytest.mark.slow


def model():
    rng = np.random.default_rng(0)
    inits = {"w": rng.normal(0, 0.3, (96, 3, 3, 3)).astype(np.float32),
             "wh": rng.normal(0, 0.2, (4, 96, 1, 1)).astype(np.float32),
             "ws": rng.normal(0, 1.5, (4, 3, 1, 1)).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="wide", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "wh"], ["h"], name="head"),
             helper.make_node("Conv", ["x", "ws"], ["s"], name="side"),
             helper.make_node("Add", ["h", "s"], ["y"], name="join")]
    return graph(nodes, {"x": np.zeros((1, 3, 16, 16), np.float32)}, ["y"], inits)


@pytest.fixture(scope="module")
def lane(tmp_path_factory):
    """(request for a keep list, the first step's remix base, feeds) on a hub file in a temp folder."""
    import onnx

    from bridge.base.lane import MIXED_BASE, LaneRequest
    from bridge.base.tensors import TensorSpec
    from bridge.converters.coreml import CoreMLOptions
    from bridge.converters.coreml.lane import convert
    from bridge.converters.onnx.ranges import activation_ranges

    work = tmp_path_factory.mktemp("remix")
    m = model()
    onnx.save(m, str(work / "hub.onnx"))
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.normal(0, 1, (1, 3, 16, 16)).astype(np.float32)} for _ in range(12)]
    ranges = activation_ranges(m, feeds[:8])

    def request(keep: str, folder: str, weights: bool = False) -> LaneRequest:
        (work / folder).mkdir()
        return LaneRequest(str(work / "hub.onnx"), str(work / folder), "m", ("int8-mixed",), "onnx",
                           (TensorSpec("x", (1, 3, 16, 16)),), (TensorSpec("y", (1, 4, 16, 16)),), feeds[:8], {},
                           CoreMLOptions(keep=keep, keep_weights=weights), ranges=ranges)

    first = convert(request("", "first"))[0]
    assert first.error is None, first.error
    return request, convert, first.details[MIXED_BASE], feeds[8:], work, ranges


def outputs(path: str, feeds) -> list[np.ndarray]:
    from bridge.validators.runners.coreml import CoreMLRunner

    runner = CoreMLRunner()
    runner.load(path)
    return [runner.infer(f)["y"] for f in feeds]


def snr_db(actual: list[np.ndarray], reference: list[np.ndarray]) -> float:
    a = np.concatenate([x.ravel() for x in actual]).astype(np.float64)
    r = np.concatenate([x.ravel() for x in reference]).astype(np.float64)
    noise = ((a - r) ** 2).sum()
    return np.inf if noise == 0 else float(10 * np.log10((r ** 2).sum() / noise))


def never_quantized(hub: str, ranges: dict, keep: list[str], out: str, weights: bool = True) -> str:
    """The hub converted W8A8 with the `keep` layers' activations never quantized (nor their weights,
    with `weights`), saved at `out`."""
    import onnx

    from bridge.converters.coreml import compress as cm
    from bridge.converters.coreml.build import build_program
    from bridge.converters.coreml.lane import _kept_weights, _quantize_activations

    target = coremltools.target.iOS17
    built = build_program(onnx.load(hub), target, after_op=_quantize_activations(ranges, skip=set(keep)),
                          defaults={"x": (1, 3, 16, 16)})
    ml = coremltools.convert(built.program, convert_to="mlprogram", compute_precision=coremltools.precision.FLOAT16,
                             minimum_deployment_target=target, skip_model_load=True)
    skip = _kept_weights(ml, built, {k: k for k in keep}) if weights else frozenset()
    ml = cm.compress(ml, "int8-mixed", "iOS17", keep=skip)
    ml.save(out)
    return out


@pytest.mark.parametrize("weights", [False, True])
@pytest.mark.parametrize("keep", ["wide", "join", "wide,join"])
def test_a_remixed_step_computes_what_a_conversion_that_never_quantized_those_layers_computes(lane, keep, weights):
    from bridge.converters.coreml.remix import remix

    request, convert, base, feeds, work, ranges = lane
    name = f"{keep}-{weights}"
    made = remix(base, tuple((n,) for n in keep.split(",")), {}, str(work / f"remix-{name}.mlpackage"), weights)
    reference = never_quantized(str(work / "hub.onnx"), ranges, keep.split(","), str(work / f"ref-{name}.mlpackage"),
                                weights)
    mixed = outputs(made.path, feeds)
    # tight: float16 rounding of a rescaled add apart, the same file (int8 output steps are ~0.4% of range)
    assert snr_db(mixed, outputs(reference, feeds)) >= 60, keep
    assert made.details["kept_layers"] == keep.split(",")
    assert made.details["kept_precision"] == ("float16" if weights else "float16 activations, int8 weights")
    if "wide" in keep and weights:  # its 2,592 weights are float16 again; nothing else was compressed
        assert made.details["compressed_weights"]["elements"] == 0 and made.details["kept_weights"]
    else:  # the int8 file's weights, as they were
        assert made.details["compressed_weights"]["elements"] == 96 * 3 * 3 * 3 and made.details["kept_weights"] == []
    # --coreml-keep (with --coreml-keep-weights for the wide step) makes the same file as the search's step
    full = convert(request(keep, f"full-{name}", weights))[0]
    assert full.error is None, full.error
    assert all(np.array_equal(a, b) for a, b in zip(mixed, outputs(full.path, feeds), strict=True))
    assert full.details["compressed_weights"] == made.details["compressed_weights"]


def test_the_comparison_tells_a_different_keep_list_apart(lane):
    """The check above can fail: a remix keeping `join` is not the conversion keeping `wide`."""
    from bridge.converters.coreml.remix import remix

    _, _, base, feeds, work, ranges = lane
    made = remix(base, (("join",),), {}, str(work / "remix-other.mlpackage"), True)
    reference = never_quantized(str(work / "hub.onnx"), ranges, ["wide"], str(work / "ref-other.mlpackage"))
    assert snr_db(outputs(made.path, feeds), outputs(reference, feeds)) < 40


def test_the_comparison_tells_int8_weights_from_float16_ones(lane):
    """Keeping `wide` with its int8 weights is not keeping it with its float16 ones: the comparison
    sees the weights' rounding (their 2,592 values at one scale per output channel)."""
    from bridge.converters.coreml.remix import remix

    _, _, base, feeds, work, ranges = lane
    made = remix(base, (("wide",),), {}, str(work / "remix-int8.mlpackage"))
    reference = never_quantized(str(work / "hub.onnx"), ranges, ["wide"], str(work / "ref-float.mlpackage"))
    assert snr_db(outputs(made.path, feeds), outputs(reference, feeds)) < 60
