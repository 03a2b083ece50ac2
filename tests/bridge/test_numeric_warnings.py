"""The warnings about the source's numbers, from the lanes' declarations (their notes, and which
modes clamp float constants to float16)."""

from __future__ import annotations

import numpy as np

from bridge.base.numerics import FP16_MAX, Constant, Overflow
from bridge.lanes import lanes
from bridge.numerics import FP16Artifact, constant_warning, flat_outputs, fp16_warnings, overflow_warning


def arts(names: list[str]) -> list[FP16Artifact]:
    """"tflite/fp16" -> the artifact as its installed lane declares it."""
    out = []
    for name in names:
        target, mode = name.split("/")
        lane = lanes()[target]
        spec = lane.mode(mode)
        out.append(FP16Artifact(name, spec.clamps_fp16_constants, lane.notes, spec.keeps_fp16_constants))
    return out


# A lane whose fp16 files store constants in float16, clamped (TFLite's did, through TensorFlow's converter).
CLAMPING = FP16Artifact("clamping/fp16", clamps_constants=True,
                        notes={"fp16-constants": "its files store them as +-65504"})
BIG = [Constant(f"k{i}", None, FP16_MAX * (i + 2), 1) for i in range(4)]
EPS = Constant("eps", "model/ln/eps", 1e-12, 1, "If model/branch (then_branch)")


def test_tflite_and_core_ml_fp16_files_take_big_constants_and_only_core_ml_loses_an_epsilon():
    """TFLite's fp16 files keep constants float16 cannot hold in float32 (converters/tflite/fp16.py);
    coremltools computes ops reading big constants in fp32 but stores an epsilon in float16."""
    text = constant_warning([*BIG, EPS], arts(["tflite/fp16", "coreml/fp16"]))
    assert text == (
        "fp16 constants: 1 single-valued float constant(s) are at or below 2**-25 (half the smallest float16 "
        "subnormal) and round to zero in float16, where an epsilon no longer keeps a division or square root "
        "from 0: model/ln/eps (tensor eps) in If model/branch (then_branch): |x| 1e-12. Affected: coreml/fp16")
    assert constant_warning(BIG, arts(["coreml/fp16", "coreml/int8-weights", "tflite/fp16"])) is None
    assert constant_warning([EPS], arts(["tflite/fp16"])) is None


def test_constant_warning_names_clamping_artifacts_for_big_constants_and_the_others_notes():
    text = constant_warning([*BIG, EPS], [CLAMPING, *arts(["tflite/fp16", "coreml/fp16"])])
    assert text == (
        "fp16 constants: 4 float constant(s) exceed 65504 (the float16 maximum) in magnitude, and its files store "
        "them as +-65504 (TFLite's fp16 files keep them in float32; Core ML computes the ops reading them in fp32): "
        "initializer k0: max |x| 1.31e+05; initializer k1: max |x| 1.965e+05; initializer k2: max |x| 2.62e+05; "
        "and 1 more. Affected: clamping/fp16; rescale the model or use fp32 for these; besides, 1 single-valued "
        "float constant(s) are at or below 2**-25 (half the smallest float16 subnormal) and round to zero in "
        "float16, where an epsilon no longer keeps a division or square root from 0: model/ln/eps (tensor eps) in "
        "If model/branch (then_branch): |x| 1e-12. Affected: clamping/fp16, coreml/fp16")
    assert constant_warning(BIG, [CLAMPING]).endswith(
        "Affected: clamping/fp16; rescale the model or use fp32 for these")
    assert "Core ML" not in constant_warning(BIG, [CLAMPING])


def test_activations_and_constants_warned_apart():
    found = [Overflow("b", "scale2", 9e4), Constant("k", None, 1e-12, 1)]
    overflow, constants = fp16_warnings(found, arts(["tflite/fp16", "coreml/fp16"]))
    assert overflow == overflow_warning(found[:1], arts(["tflite/fp16", "coreml/fp16"]))
    assert constants == constant_warning(found[1:], arts(["coreml/fp16"]))
    assert fp16_warnings(found[1:], arts(["tflite/fp16"])) == []


def test_which_modes_compute_in_fp16_and_how_they_keep_constants():
    """Declared in each lane's modes table: TFLite's fp16 file computes in fp16 on GPU delegates only,
    and keeps the constants float16 cannot hold in float32; every Core ML mode but fp32 computes in fp16."""
    tflite, coreml = lanes()["tflite"], lanes()["coreml"]
    assert [m.name for m in tflite.modes if m.fp16_compute] == ["fp16"]
    assert tflite.mode("fp16").keeps_fp16_constants and not tflite.mode("fp16").clamps_fp16_constants
    assert all(coreml.mode(m).fp16_compute for m in ("fp16", "int8-weights", "palettize-4", "int8"))
    assert not coreml.mode("fp32").fp16_compute
    assert not any(m.keeps_fp16_constants or m.clamps_fp16_constants for m in coreml.modes)


def test_warning_names_the_first_tensors_the_limit_and_the_artifacts():
    found = [Overflow(f"t{i}", f"node{i}", FP16_MAX * (i + 2)) for i in range(5)]
    text = overflow_warning(found, arts(["tflite/fp16", "coreml/int8-weights"]))
    assert text.startswith("fp16 overflow: 5 tensor(s) exceed 65504 (the float16 maximum)")
    assert "node0 (tensor t0): max |x| 1.31e+05; node1 (tensor t1): max |x| 1.965e+05; node2" in text
    assert "node3" not in text and "and 2 more" in text
    assert "Affected: tflite/fp16, coreml/int8-weights (TFLite runs fp16 files in fp32 on CPU" in text
    assert "GPU" not in overflow_warning(found, arts(["coreml/fp16"]))


def test_a_source_output_that_ignores_its_input_is_flagged():
    rng = np.random.default_rng(0)
    softmax_of_nothing = [np.full((1, 1000), 1e-3, np.float32) + np.float32(1e-12) * i for i in range(8)]
    varying = [rng.standard_normal((1, 10)).astype(np.float32) for _ in range(8)]
    barely = [np.ones((1, 10), np.float32) + np.float32(1e-4) * v for v in varying]  # 1e-4: real, if small
    found = flat_outputs({"probs": softmax_of_nothing, "logits": varying, "scores": barely})
    assert len(found) == 1 and found[0].startswith("the source's output probs barely varies over the 8 parity")
    assert flat_outputs({"probs": softmax_of_nothing[:1]}) == []  # one sample: nothing to compare
    grown = [np.ones((1, 4), np.float32), np.ones((1, 8), np.float32)]  # two sizes of a dynamic axis
    assert flat_outputs({"y": grown}) == []
