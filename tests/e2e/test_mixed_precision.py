"""Mixed precision: a low-precision mode with named layers kept in higher precision.

The models make one layer sensitive on purpose. Core ML: a Conv (and ReLU) whose output, a few
units, is multiplied by 2e4, so the product passes float16's largest value (65504) and becomes Inf
in an fp16 graph. (With the scale right after the Conv, coremltools folds it into the Conv's
weights and bias, finds a bias fp16 cannot hold and keeps that op in fp32 by itself; the ReLU
between them is what leaves the overflow to the activations.) Keeping that scale in float32 is what
rescues the model; keeping any other layer is not.
"""

from __future__ import annotations

import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import artifact, bridge, report, report_folder

pytestmark = pytest.mark.slow

# These models are tiny: a search's 4x budget is a few seconds, two or three steps, and whether the
# last step fits depends on the machine's load. Tests of what a search finds give it room
# (`--search-budget`); test_a_ranking_that_outlasts_the_budget_is_stopped_there tests the bound.
WIDE_BUDGET = ("--search-budget", "50")


def save(path, nodes, inits: dict[str, np.ndarray], shape=(1, 3, 16, 16), out_shape=None) -> str:
    """One float input x and one float output y, opset 17; returns the file's path."""
    g = helper.make_graph(nodes, path.stem, [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape or shape))],
                          initializer=[numpy_helper.from_array(v, n) for n, v in inits.items()])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    onnx.save(model, str(path))
    return str(path)


def conv_then_huge_scale(path) -> str:
    """x -> conv1 -> relu1 -> conv2 -> relu2 (outputs around 5) -> scale (x 2e4, past fp16's range)."""
    rng = np.random.default_rng(0)
    inits = {"w1": rng.normal(0, 0.3, (64, 3, 3, 3)).astype(np.float32),
             "w2": rng.normal(0, 0.05, (4, 64, 3, 3)).astype(np.float32),
             "b2": np.full(4, 5.0, np.float32), "k": np.array(2e4, np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("Mul", ["r2", "k"], ["y"], name="scale")]
    return save(path, nodes, inits, out_shape=(1, 4, 16, 16))


def test_coreml_fp16_mixed_keeps_the_sensitive_layer_in_float32(tmp_path):
    pytest.importorskip("coremltools")
    src = conv_then_huge_scale(tmp_path / "sensitive.onnx")
    out = tmp_path / "out"
    r = bridge("convert", src, "--target", "coreml", "--quantize", "coreml=fp32,fp16,fp16-mixed",
               "--coreml-keep", "scale", "--out", out)
    assert r.returncode == 1, r.stderr[-2000:]  # fp16 fails; the rest pass
    rep = report(out)
    fp16, mixed, fp32 = (artifact(rep, "coreml", m) for m in ("fp16", "fp16-mixed", "fp32"))
    assert not fp16["parity"]["passed"]
    assert fp16["parity"]["outputs"]["y"]["nonfinite"]["inf"] > 0
    assert mixed["parity"]["passed"], mixed["parity"]["reason"]
    assert mixed["parity"]["outputs"]["y"]["snr_db"] >= 30
    assert mixed["kept_layers"] == ["scale"]
    assert "1 layer(s) kept in float32: scale" in r.stdout
    # the weights of the fp16 layers are stored in fp16: the file is about half the fp32 one
    assert mixed["bytes"] < 0.75 * fp32["bytes"]


def test_coreml_fp16_mixed_keeping_another_layer_does_not_rescue_it(tmp_path):
    pytest.importorskip("coremltools")
    src = conv_then_huge_scale(tmp_path / "sensitive.onnx")
    out = tmp_path / "out"
    r = bridge("convert", src, "--target", "coreml", "--quantize", "coreml=fp16-mixed",
               "--coreml-keep", "conv1,conv2", "--out", out)
    assert r.returncode == 1, r.stderr[-2000:]
    mixed = artifact(report(out), "coreml", "fp16-mixed")
    assert mixed["kept_layers"] == ["conv1", "conv2"]
    assert not mixed["parity"]["passed"]


def test_coreml_keep_names_checked(tmp_path):
    src = conv_then_huge_scale(tmp_path / "sensitive.onnx")
    r = bridge("convert", src, "--target", "coreml", "--quantize", "coreml=fp16", "--coreml-keep", "scale",
               "--out", tmp_path / "a")
    assert r.returncode == 2 and "fp16-mixed" in r.stderr and "Traceback" not in r.stderr
    r = bridge("convert", src, "--target", "coreml", "--quantize", "coreml=fp16-mixed", "--coreml-keep", "nope",
               "--out", tmp_path / "b")
    assert r.returncode == 3 and "no layer named nope" in r.stderr and "Traceback" not in r.stderr
    r = bridge("convert", src, "--target", "coreml", "--quantize", "coreml=int8-mixed", "--coreml-keep-weights",
               "--out", tmp_path / "c")
    assert r.returncode == 2 and "--coreml-keep" in r.stderr and "Traceback" not in r.stderr


def outlier_weights_on_a_dead_channel(path, channels: int = 4) -> str:
    """x -> mask (channel 2 times 0) -> probe (a Conv whose weights on that dead channel are 50, the
    rest ~0.3) -> relu -> head (1x1 Conv). Per-channel int8 weights take their scale from the 50s,
    so the weights that matter round to 0 or +-1: the probe alone ruins the int8 file. Core ML
    compresses weights of 2048+ elements only: its tests give the probe 96 output channels."""
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.3, (channels, 3, 3, 3)).astype(np.float32)
    w[:, 2] = 50.0
    inits = {"mask": np.array([1, 1, 0], np.float32).reshape(1, 3, 1, 1), "w": w,
             "wh": rng.normal(0, 0.5, (4, channels, 1, 1)).astype(np.float32)}
    nodes = [helper.make_node("Mul", ["x", "mask"], ["m"], name="mask"),
             helper.make_node("Conv", ["m", "w"], ["c"], name="probe", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "wh"], ["y"], name="head")]
    return save(path, nodes, inits, out_shape=(1, 4, 16, 16))


def test_tflite_int8_mixed_keeps_the_sensitive_layer_in_float32(tmp_path):
    pytest.importorskip("ai_edge_litert")
    src = outlier_weights_on_a_dead_channel(tmp_path / "dead.onnx")
    out = tmp_path / "out"
    r = bridge("convert", src, "--target", "tflite", "--quantize", "tflite=fp32,int8,int8-mixed",
               "--tflite-keep", "probe", "--out", out)
    assert r.returncode == 1, r.stderr[-2000:]  # int8 fails; the rest pass
    rep = report(out)
    int8, mixed = (artifact(rep, "tflite", m) for m in ("int8", "int8-mixed"))
    assert not int8["parity"]["passed"]
    assert int8["parity"]["outputs"]["y"]["snr_db"] < 15
    assert mixed["parity"]["passed"], mixed["parity"]["reason"]
    assert mixed["parity"]["outputs"]["y"]["snr_db"] >= 25
    assert mixed["kept_layers"] == ["probe"]
    assert "1 layer(s) kept in float32: probe" in r.stdout
    # the file computes the probe in float: one more DEQUANTIZE and QUANTIZE than the int8 file
    assert mixed["ops"]["DEQUANTIZE"] == int8["ops"]["DEQUANTIZE"] + 1
    assert mixed["ops"]["QUANTIZE"] == int8["ops"]["QUANTIZE"] + 1


def test_tflite_int8_mixed_keeping_another_layer_does_not_rescue_it(tmp_path):
    pytest.importorskip("ai_edge_litert")
    src = outlier_weights_on_a_dead_channel(tmp_path / "dead.onnx")
    out = tmp_path / "out"
    r = bridge("convert", src, "--target", "tflite", "--quantize", "tflite=int8-mixed", "--tflite-keep", "head",
               "--out", out)
    assert r.returncode == 1, r.stderr[-2000:]
    mixed = artifact(report(out), "tflite", "int8-mixed")
    assert mixed["kept_layers"] == ["head"] and not mixed["parity"]["passed"]


def test_coreml_int8_mixed_keeps_the_sensitive_layer_in_float16(tmp_path):
    """W8A8 with the probe left alone, its weights too (--coreml-keep-weights): they stay float16 and
    its output is not quantized. Its activations alone (int8 weights) do not rescue it."""
    pytest.importorskip("coremltools")
    src = outlier_weights_on_a_dead_channel(tmp_path / "dead.onnx", channels=96)
    out = tmp_path / "out"
    r = bridge("convert", src, "--target", "coreml", "--quantize", "coreml=int8,int8-mixed", "--coreml-keep", "probe",
               "--coreml-keep-weights", "--out", out)
    assert r.returncode == 1, r.stderr[-2000:]  # int8 fails, int8-mixed passes
    rep = report(out)
    int8, mixed = (artifact(rep, "coreml", m) for m in ("int8", "int8-mixed"))
    assert not int8["parity"]["passed"]
    assert int8["parity"]["outputs"]["y"]["snr_db"] < 15
    assert int8["compressed_weights"]["elements"] == 96 * 3 * 3 * 3  # the probe's weights, in int8
    assert mixed["parity"]["passed"], mixed["parity"]["reason"]
    assert mixed["parity"]["outputs"]["y"]["snr_db"] >= 25
    assert mixed["kept_layers"] == ["probe"] and mixed["kept_precision"] == "float16"
    assert mixed["compressed_weights"]["elements"] == 0 and mixed["kept_weights"]
    assert "1 layer(s) kept in float16: probe" in r.stdout

    r = bridge("convert", src, "--target", "coreml", "--quantize", "coreml=int8-mixed", "--coreml-keep", "probe",
               "--out", tmp_path / "narrow")
    assert r.returncode == 1, r.stderr[-2000:]
    narrow = artifact(report(tmp_path / "narrow"), "coreml", "int8-mixed")
    assert narrow["kept_precision"] == "float16 activations, int8 weights" and narrow["kept_weights"] == []
    assert narrow["compressed_weights"]["elements"] == 96 * 3 * 3 * 3
    assert not narrow["parity"]["passed"] and narrow["parity"]["outputs"]["y"]["snr_db"] < 15


def test_coreml_fp16_mixed_search_keeps_the_sensitive_layer(tmp_path):
    """No --coreml-keep: the search starts from all-fp16 (Inf), ranks the layers and keeps the scale only."""
    pytest.importorskip("coremltools")
    src = conv_then_huge_scale(tmp_path / "sensitive.onnx")
    out = tmp_path / "out"
    r = bridge("convert", src, "--target", "coreml", "--quantize", "coreml=fp16-mixed", "--out", out, *WIDE_BUDGET)
    assert r.returncode == 0, r.stderr[-2000:]
    mixed = artifact(report(out), "coreml", "fp16-mixed")
    assert mixed["kept_layers"] == ["scale"]
    search = mixed["search"]
    assert search["ranking"][0] == "scale"
    assert [(s["kept"], s["passed"]) for s in search["steps"]] == [(0, False), (1, True)]
    assert "1 layer(s) kept in float32: scale" in r.stdout


@pytest.mark.parametrize(("lane", "runtime", "channels"),
                         [("tflite", "ai_edge_litert", 4), ("coreml", "coremltools", 96)])
def test_int8_mixed_search_keeps_the_sensitive_layer(tmp_path, lane, runtime, channels):
    pytest.importorskip(runtime)
    src = outlier_weights_on_a_dead_channel(tmp_path / "dead.onnx", channels=channels)
    out = tmp_path / "out"
    r = bridge("convert", src, "--target", lane, "--quantize", f"{lane}=int8-mixed", "--out", out, *WIDE_BUDGET)
    assert r.returncode == 0, r.stderr[-2000:]
    rep = report(out)
    mixed = artifact(rep, lane, "int8-mixed")
    assert mixed["kept_layers"] == ["probe"]
    assert mixed["search"]["ranking"][0] == "probe"
    steps = [(s["kept"], s["passed"]) for s in mixed["search"]["steps"]]
    # later steps are cut from the first step's files, not converted: one conversion, then remixes
    stages = [r["stage"] for r in rep["stage_runs"]]
    assert stages.count(f"{lane}-convert") == 1 and stages.count(f"{lane}-remix") == len(steps) - 1, stages
    if lane == "tflite":
        assert steps == [(0, False), (1, True)]
        return
    # Core ML keeps activations first: every layer's (mask, probe, relu, head) fails, the probe's int8
    # weights being what hurts, so the ranked search keeps float16 weights
    assert [(s["kept"], s["float16_weights"], s["passed"]) for s in mixed["search"]["steps"]] == [
        (0, False, False), (4, False, False), (1, True, True)]
    assert mixed["kept_precision"] == "float16"  # weights too: nothing left compressed
    assert mixed["compressed_weights"]["elements"] == 0 and mixed["kept_weights"]


def conv_types(path) -> list[tuple[str, str, str, int]]:
    """Each CONV_2D of a .tflite file, in order: the types of its input, weight and output, and how
    many scales its weight has."""
    from bridge.converters.tflite import flatbuffer as fbu

    model = fbu.load(path.read_bytes())
    sg, names = model.subgraphs[0], {v: k for k, v in vars(fbu.schema().TensorType).items() if not k.startswith("_")}
    convs = [op for op in sg.operators if fbu.code_name(model.operatorCodes[op.opcodeIndex]) == "CONV_2D"]
    def scales(t: int) -> int:
        q = sg.tensors[t].quantization
        return 0 if q is None or q.scale is None else len(q.scale)

    return [(*(names[sg.tensors[t].type] for t in (op.inputs[0], op.inputs[1], op.outputs[0])), scales(op.inputs[1]))
            for op in convs]


def test_tflite_int8_mixed_search_restores_float32_weights_where_int8_weights_fail(tmp_path):
    """The probe's 96 x 27 weights are many enough for int8 (1024 or more): kept with them at float
    activations (the hybrid CONV_2D), it still fails, its per-channel scales taken from the outlier
    50s; so does keeping every layer so. The second tier gives the probe its float32 weights back."""
    pytest.importorskip("ai_edge_litert")
    src = outlier_weights_on_a_dead_channel(tmp_path / "dead.onnx", channels=96)
    out = tmp_path / "out"
    r = bridge("convert", src, "--target", "tflite", "--quantize", "tflite=int8-mixed", "--out", out, *WIDE_BUDGET)
    assert r.returncode == 0, r.stderr[-2000:]
    mixed = artifact(report(out), "tflite", "int8-mixed")
    assert mixed["kept_layers"][0] == "probe" and mixed["parity"]["passed"]
    steps = [(s["kept"], s["all_readers"], s["float32_weights"], s["passed"]) for s in mixed["search"]["steps"]]
    assert steps[0] == (0, False, False, False) and steps[-1] == (1, False, True, True), steps
    assert not any(passed for _, _, second, passed in steps if not second), steps
    assert mixed["kept_precision"] == "float32"
    assert mixed["search"]["outcome"] == "passed keeping 1 of 2 layers, float32 weights too"
    # the probe in float32, weights too; the head as in the int8 file
    assert conv_types(out / mixed["path"]) == [("FLOAT32", "FLOAT32", "FLOAT32", 0), ("INT8", "INT8", "INT8", 4)]


def outlier_activations_channel(path) -> str:
    """x -> `wide` (a 3x3 Conv, 96 channels: 2,592 weights, which Core ML compresses) whose last
    channel's bias is 1000 -> `head` (1x1 Conv) that reads every channel but that one. One int8 scale
    for all of `wide`'s output takes its step (~8) from the outlier, so the channels that matter
    (about +-1.6) round to 0: int8 fails, while `wide`'s weights, one scale per output channel, are
    fine (MiniLM's FFN outputs have this shape: |x| up to 195, median 0.15)."""
    rng = np.random.default_rng(0)
    bias = rng.normal(0, 0.1, 96).astype(np.float32)
    bias[-1] = 1000.0
    head = rng.normal(0, 0.2, (4, 96, 1, 1)).astype(np.float32)
    head[:, -1] = 0.0
    inits = {"w": rng.normal(0, 0.3, (96, 3, 3, 3)).astype(np.float32), "b": bias, "wh": head}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="wide", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["c", "wh"], ["y"], name="head")]
    return save(path, nodes, inits, out_shape=(1, 4, 16, 16))


def test_tflite_int8_mixed_keeps_a_layers_int8_weights_with_float_activations(tmp_path):
    """The search keeps `wide` with int8 weights (symmetric, one scale per output channel, for the
    hybrid CONV_2D kernel) and float32 activations: the file passes where the int8 one fails, and is
    smaller than the same ops cut into the int8 file with their float32 weights (the second tier's
    `keep_float`; --tflite-keep cannot name `wide` here: onnx2tf's report names no tensor for it,
    the search keeps it at the tensor localisation found it at)."""
    pytest.importorskip("ai_edge_litert")
    from bridge.converters.tflite import flatbuffer as fbu
    from bridge.converters.tflite.mixed import keep_float

    src = outlier_activations_channel(tmp_path / "outlier.onnx")
    a = tmp_path / "a"
    r = bridge("convert", src, "--target", "tflite", "--quantize", "tflite=fp32,int8,int8-mixed", "--out", a,
               *WIDE_BUDGET)
    assert r.returncode == 1, r.stderr[-2000:]  # int8 fails, int8-mixed passes
    fp32, int8, mixed = (artifact(report(a), "tflite", m) for m in ("fp32", "int8", "int8-mixed"))
    assert not int8["parity"]["passed"] and int8["parity"]["outputs"]["y"]["snr_db"] < 15
    assert mixed["parity"]["passed"], mixed["parity"]["reason"]
    assert mixed["parity"]["outputs"]["y"]["snr_db"] >= 25
    assert mixed["kept_layers"] == ["wide"] and mixed["kept_precision"] == "float32 activations, int8 weights"
    assert not any(s["float32_weights"] for s in mixed["search"]["steps"])
    assert "1 layer(s) kept in float32 activations, int8 weights: wide" in r.stdout
    files = {m["quantization"]: report_folder(a) / m["path"] for m in (fp32, int8, mixed)}
    convs = conv_types(files["int8-mixed"])
    assert convs[0] == ("FLOAT32", "INT8", "FLOAT32", 96), convs  # `wide`: int8 weights, one scale per channel

    model = fbu.load(files["int8-mixed"].read_bytes())
    sg = model.subgraphs[0]
    kept = [sg.tensors[t].name.decode().removesuffix("_float") for op in sg.operators for t in op.outputs
            if sg.tensors[t].name.decode().endswith("_float")]
    float32, missed, _ = keep_float(files["int8"].read_bytes(), files["fp32"].read_bytes(), kept)
    assert kept and not missed
    # the same ops, `wide`'s 2,592 weights at 4 bytes each instead of 1, less its 96 scales and
    # int64 zero points and the int8 tensors' own records: 5,336 bytes more
    assert len(float32) - mixed["bytes"] >= 2592 * 2, (len(float32), mixed["bytes"])


def test_coreml_int8_mixed_keeps_a_layers_activations_with_its_weights_int8(tmp_path):
    """The search keeps `wide` at int8 weights and float16 activations (W8A16): the file passes where
    the int8 one fails, and holds the int8 file's compressed weights, smaller than the same layer
    kept with its float16 weights (--coreml-keep-weights)."""
    pytest.importorskip("coremltools")
    src = outlier_activations_channel(tmp_path / "outlier.onnx")
    r = bridge("convert", src, "--target", "coreml", "--quantize", "coreml=int8,int8-mixed", "--out", tmp_path / "a",
               *WIDE_BUDGET)
    assert r.returncode == 1, r.stderr[-2000:]  # int8 fails, int8-mixed passes
    int8, mixed = (artifact(report(tmp_path / "a"), "coreml", m) for m in ("int8", "int8-mixed"))
    assert not int8["parity"]["passed"] and int8["parity"]["outputs"]["y"]["snr_db"] < 15
    assert mixed["parity"]["passed"], mixed["parity"]["reason"]
    assert mixed["parity"]["outputs"]["y"]["snr_db"] >= 25
    assert mixed["kept_layers"] == ["wide"]
    # every layer's activations kept (before the ranking) passes; then `wide` alone does
    assert [(s["kept"], s["float16_weights"], s["passed"]) for s in mixed["search"]["steps"]] == [
        (0, False, False), (2, False, True), (1, False, True)]
    assert mixed["kept_precision"] == "float16 activations, int8 weights" and mixed["kept_weights"] == []
    assert mixed["compressed_weights"] == int8["compressed_weights"]
    assert mixed["compressed_weights"]["elements"] == 96 * 3 * 3 * 3
    assert "1 layer(s) kept in float16 activations, int8 weights: wide" in r.stdout

    r = bridge("convert", src, "--target", "coreml", "--quantize", "coreml=int8-mixed", "--coreml-keep", "wide",
               "--coreml-keep-weights", "--out", tmp_path / "b")
    assert r.returncode == 0, r.stderr[-2000:]
    wide = artifact(report(tmp_path / "b"), "coreml", "int8-mixed")
    assert wide["compressed_weights"]["elements"] == 0 and wide["kept_weights"]
    assert wide["bytes"] > mixed["bytes"]
    # the weight file: as large as the int8 one (the same blobs, in the remix's order), too small for the
    # 2,592 weights at 2 bytes each; kept wide, it holds them
    weights = [(tmp_path / p).with_suffix(".mlpackage") / "Data/com.apple.CoreML/weights/weight.bin" for p in (
        "a/.bridge-failed/outlier_int8", "a/.bridge-failed/outlier_int8-mixed", "b/outlier_int8-mixed")]
    plain, narrow, float16 = (w.read_bytes() for w in weights)
    assert len(narrow) == len(plain) < 2592 * 2 <= len(float16)


def test_tflite_int8_mixed_keeping_the_last_layer_hands_its_float_output_on(tmp_path):
    """One of 49,152 output values is 1000 times its input, the rest equal theirs: the int8 output
    tensor takes its step from that one value, too coarse for the bulk of the values that carry
    most of the signal. Keeping the layer that computes it writes the graph's float output itself:
    no int8 tensor and DEQUANTIZE behind it any more (the quantizer renames that tensor `y_int8`; a
    keep that missed it once left the file unchanged), and the kept layer reads the float input
    itself, so the input's QUANTIZE goes too."""
    pytest.importorskip("ai_edge_litert")
    spike = np.ones((1, 3, 128, 128), np.float32)
    spike[0, 0, 0, 0] = 1e3
    src = save(tmp_path / "spike.onnx", [helper.make_node("Mul", ["x", "spike"], ["y"], name="spike_scale")],
               {"spike": spike}, shape=(1, 3, 128, 128))
    out = tmp_path / "out"
    r = bridge("convert", src, "--target", "tflite", "--quantize", "tflite=int8,int8-mixed", "--out", out,
               *WIDE_BUDGET)
    assert r.returncode == 1, r.stderr[-2000:]  # int8 fails
    rep = report(out)
    int8, mixed = (artifact(rep, "tflite", m) for m in ("int8", "int8-mixed"))
    assert not int8["parity"]["passed"] and int8["parity"]["outputs"]["y"]["snr_db"] < 15
    assert mixed["parity"]["passed"] and mixed["parity"]["outputs"]["y"]["snr_db"] > 100
    assert mixed["kept_layers"] == ["spike_scale"] and mixed["ops"] == {"MUL": 1}
    assert [(s["kept"], s["all_readers"], s["passed"]) for s in mixed["search"]["steps"]] == [
        (0, False, False), (1, False, True)]


def dead_channel_probe_into_two_adds(path) -> str:
    """The dead-channel probe (96 channels) whose ReLU is read twice: by `sum`, an Add with a
    side 1x1 Conv of x, and by `half` (x 0.5). In Core ML's W8A8 file coremltools normalizes the
    scales of every Add of two dequantized inputs (`distributive_quantized_binary_op_scale_normalization`):
    `sum` reads the probe's int8 tensor through a dequantize of its own, and holds its value divided
    by the side's scale; the ReLU's first dequantize lives on for `half`."""
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.3, (96, 3, 3, 3)).astype(np.float32)
    w[:, 2] = 50.0
    inits = {"mask": np.array([1, 1, 0], np.float32).reshape(1, 3, 1, 1), "w": w,
             "ws": rng.normal(0, 0.5, (96, 3, 1, 1)).astype(np.float32), "k": np.array(0.5, np.float32),
             "wh": rng.normal(0, 0.2, (4, 96, 1, 1)).astype(np.float32),
             "wt": rng.normal(0, 0.2, (4, 96, 1, 1)).astype(np.float32)}
    nodes = [helper.make_node("Mul", ["x", "mask"], ["m"], name="mask"),
             helper.make_node("Conv", ["m", "w"], ["c"], name="probe", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Conv", ["x", "ws"], ["s"], name="side"),
             helper.make_node("Add", ["r", "s"], ["a"], name="sum"),
             helper.make_node("Mul", ["r", "k"], ["t"], name="half"),
             helper.make_node("Conv", ["a", "wh"], ["h1"], name="head"),
             helper.make_node("Conv", ["t", "wt"], ["h2"], name="head2"),
             helper.make_node("Add", ["h1", "h2"], ["y"], name="out")]
    return save(path, nodes, inits, out_shape=(1, 4, 16, 16))


def test_coreml_int8_isolated_profile_reaches_an_add_whose_scales_coremltools_normalized(tmp_path):
    """Given at the ReLU's first dequantize, the exact value never reached `sum` (it reads the int8
    tensor through its own dequantize) and `sum` was read at its rescaled output: it ranked first,
    at -36.4 dB on its own (the outputs at -35.2 dB; the whole int8 file gives 11.0 dB), and `head`
    was given the rescaled value (0.1 dB). Read after its own rounding, its readers given the exact
    value at every dequantize, each in the units the file holds it in: `sum` 38.8 dB, `head` 41.9 dB,
    and the probe (8.8 dB, the outputs at 11.0 dB) first."""
    pytest.importorskip("coremltools")
    from bridge.mixed import ranked_layers

    src = dead_channel_probe_into_two_adds(tmp_path / "adds.onnx")
    out = tmp_path / "out"
    r = bridge("convert", src, "--target", "coreml", "--quantize", "coreml=int8", "--out", out)
    assert r.returncode == 1, r.stderr[-2000:]
    loc = artifact(report(out), "coreml", "int8")["parity"]["localization"]
    layers = {layer["node"]: layer for layer in loc["layers"]}
    assert layers["sum"]["artifact_op"] == "add"
    assert layers["sum"]["isolated"]["snr_db"] >= 25, layers["sum"]
    assert layers["probe"]["isolated"]["snr_db"] < 15
    assert ranked_layers(loc)[0][0] == "probe"
    assert loc["isolated"]["worst"]["node"] == "probe"


def test_a_ranking_that_outlasts_the_budget_is_stopped_there(tmp_path):
    """The search's ranking (a localisation stage) counts against its budget: one that hangs is
    stopped when what is left of 4x the first step's time has passed, and the search fails saying
    so, instead of waiting for the run's own timeout."""
    pytest.importorskip("ai_edge_litert")
    from tests.e2e.test_crashes_and_output import faulty

    src = outlier_weights_on_a_dead_channel(tmp_path / "dead.onnx")
    out = tmp_path / "out"
    started = time.perf_counter()
    # --no-localize: the failed file is not localised afterwards (that stage would hang too)
    r = faulty("convert", src, "--target", "tflite", "--quantize", "tflite=int8-mixed", "--out", out,
               "--no-localize", fault="tflite-localize:hang", timeout=600)
    elapsed = time.perf_counter() - started
    assert r.returncode == 1, r.stderr[-2000:]
    mixed = artifact(report(out), "tflite", "int8-mixed")
    search = mixed["search"]
    assert not mixed["parity"]["passed"] and search["ranked"] == 0
    assert "timed out" in search["ranking_method"] and "no layer was ranked" in mixed["parity"]["reason"]
    assert [s["kept"] for s in search["steps"]] == [0]
    spent = search["rank_seconds"] + sum(s["seconds"] for s in search["steps"])
    assert spent <= search["budget_seconds"] + 10, search
    assert elapsed < 300  # the run's own timeout (1800 s) never came into it
