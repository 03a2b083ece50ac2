"""A Core ML `int8-mixed` search step cut by `remix` from the first step's packages computes what a
conversion that never quantized the kept layers computes (our activation hook skips them, weight
compression skips their weights: how the lane made `--coreml-keep` files before the remix; now the
lane cuts them out of the W8A8 file the same way as the search, which is checked too).

The model (a real conversion through the lane, calibrated activation ranges from onnxruntime):
x -> `wide` (Conv, 96 channels: 2,592 weights, which int8 compresses) -> relu -> `head` (1x1 Conv),
plus `side` (1x1 Conv of x) added in by `join`. The two inputs of `join` are both dequantized and its
output quantized, so coremltools normalizes their scales (its
`distributive_quantized_binary_op_scale_normalization`): keeping `join` exercises the rescaling the
remix puts where it drops that pair; keeping `wide` exercises its float16 weights.
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

    def request(keep: str, folder: str) -> LaneRequest:
        (work / folder).mkdir()
        return LaneRequest(str(work / "hub.onnx"), str(work / folder), "m", ("int8-mixed",), "onnx",
                           (TensorSpec("x", (1, 3, 16, 16)),), (TensorSpec("y", (1, 4, 16, 16)),), feeds[:8], {},
                           CoreMLOptions(keep=keep), ranges=ranges)

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


def never_quantized(hub: str, ranges: dict, keep: list[str], out: str) -> str:
    """The hub converted W8A8 with the `keep` layers never quantized, saved at `out`."""
    import onnx

    from bridge.converters.coreml import compress as cm
    from bridge.converters.coreml.build import build_program
    from bridge.converters.coreml.lane import _kept_weights, _quantize_activations

    target = coremltools.target.iOS17
    built = build_program(onnx.load(hub), target, after_op=_quantize_activations(ranges, skip=set(keep)),
                          defaults={"x": (1, 3, 16, 16)})
    ml = coremltools.convert(built.program, convert_to="mlprogram", compute_precision=coremltools.precision.FLOAT16,
                             minimum_deployment_target=target, skip_model_load=True)
    ml = cm.compress(ml, "int8-mixed", "iOS17", keep=_kept_weights(ml, built, {k: k for k in keep}))
    ml.save(out)
    return out


@pytest.mark.parametrize("keep", ["wide", "join", "wide,join"])
def test_a_remixed_step_computes_what_a_conversion_that_never_quantized_those_layers_computes(lane, keep):
    from bridge.converters.coreml.remix import remix

    request, convert, base, feeds, work, ranges = lane
    made = remix(base, tuple((n,) for n in keep.split(",")), {}, str(work / f"remix-{keep}.mlpackage"))
    reference = never_quantized(str(work / "hub.onnx"), ranges, keep.split(","), str(work / f"ref-{keep}.mlpackage"))
    mixed = outputs(made.path, feeds)
    # tight: float16 rounding of a rescaled add apart, the same file (int8 output steps are ~0.4% of range)
    assert snr_db(mixed, outputs(reference, feeds)) >= 60, keep
    assert made.details["kept_layers"] == keep.split(",")
    if "wide" in keep:  # its 2,592 weights are float16 again; nothing else was compressed
        assert made.details["compressed_weights"]["elements"] == 0 and made.details["kept_weights"]
    # --coreml-keep makes the same file as the search's step
    full = convert(request(keep, f"full-{keep}"))[0]
    assert full.error is None, full.error
    assert all(np.array_equal(a, b) for a, b in zip(mixed, outputs(full.path, feeds), strict=True))
    assert full.details["compressed_weights"] == made.details["compressed_weights"]


def test_the_comparison_tells_a_different_keep_list_apart(lane):
    """The check above can fail: a remix keeping `join` is not the conversion keeping `wide`."""
    from bridge.converters.coreml.remix import remix

    _, _, base, feeds, work, ranges = lane
    made = remix(base, (("join",),), {}, str(work / "remix-other.mlpackage"))
    reference = never_quantized(str(work / "hub.onnx"), ranges, ["wide"], str(work / "ref-other.mlpackage"))
    assert snr_db(outputs(made.path, feeds), outputs(reference, feeds)) < 40
