"""Per-layer localisation, end to end: real conversions, real runtimes, the installed `bridge` script.

Each test makes one layer wrong, in the source (a Conv's weights scaled, then converted) or in an
artifact (weights scaled, an attribute or fused activation changed, as a broken lowering would),
and asserts that the report names that layer, or the fused group holding it, with numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import SAMPLES, artifact, bridge, held_out_images, report, report_folder, write_module
from tests.e2e import corrupt

pytestmark = pytest.mark.slow

CNN = f"{SAMPLES / 'shapes_cnn.py'}:load"
CONV4 = "/features/features.4/features.4.0/Conv"  # shapes_cnn's pointwise convolution (module features.4.0)
CLIP4 = "/features/features.4/features.4.2/Clip"

PERTURBED = f"""
    import sys
    sys.path.insert(0, {str(SAMPLES)!r})
    import torch
    import shapes_cnn

    def load():
        model, example = shapes_cnn.load()
        with torch.no_grad():
            model.features[4][0].weight.mul_(1.5)
        return model, example
    """


def convert(out: Path, source: str, *args: str) -> dict:
    r = bridge("convert", source, "--out", out, *args)
    assert r.returncode in (0, 1), r.stderr[-3000:]
    return report(out)


def validate(tmp: Path, source: str, *files: Path, args: tuple[str, ...] = ()) -> tuple[dict, object]:
    path = tmp / "validate.json"
    r = bridge("validate", source, *files, "--report", path, *args)
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    return json.loads(path.read_text()), r


def located(a: dict) -> dict:
    loc = a["parity"]["localization"]
    assert loc["status"] == "localized", loc
    return loc["first_divergent"]


def layer(loc: dict, tensor: str) -> dict:
    return next(x for x in loc["layers"] if x["tensor"] == tensor)


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    """The trained sample, to ONNX, TFLite fp32 and Core ML fp32 (all pass parity)."""
    out = tmp_path_factory.mktemp("cnn")
    rep = convert(out, CNN, "--target", "onnx", "--target", "tflite", "--target", "coreml",
                  "--quantize", "coreml=fp32")
    assert rep["passed"]
    assert all("localization" not in a["parity"] for a in rep["artifacts"]), "only failing artifacts are localised"
    return out


def test_conv_scaled_in_the_source_is_named_in_every_artifact(tmp_path):
    """The trained CNN with one Conv's weights x1.5, converted, then validated against the true
    CNN: each artifact's first divergent layer is that Conv (with the Relu6 TFLite fused into it)."""
    out = tmp_path / "perturbed"
    made = convert(out, f"{write_module(tmp_path / 'perturbed_cnn.py', PERTURBED)}:load", "--target", "onnx",
                   "--target", "tflite", "--target", "coreml", "--quantize", "coreml=fp32,fp16")
    assert made["passed"]  # each file matches the source it was made from
    files = sorted(p for p in out.iterdir() if p.suffix in (".onnx", ".tflite", ".mlpackage"))
    rep, r = validate(tmp_path, CNN, *files)
    assert r.returncode == 1
    assert f"first divergent layer: Conv {CONV4}" in r.stderr
    for a in rep["artifacts"]:
        first = located(a)
        assert first["node"] == CONV4 and first["op_type"] == "Conv" and first["module"] == "features.4.0"
        assert first["rel_l2"] > 0.3 and first["input_snr_db"] > 50  # wrong here, right just before
        assert first["jump_db"] > 40
        loc = a["parity"]["localization"]
        earlier = loc["layers"][:loc["layers"].index(next(x for x in loc["layers"] if x["node"] == CONV4))]
        assert len(earlier) >= 4 and all(x["passed"] for x in earlier)
        assert loc["isolated"]["worst"]["node"] == CONV4
        assert 0 < loc["seconds"] < 120
    tflite = artifact(rep, "tflite", "fp32")
    assert located(tflite)["nodes"] == [CONV4, CLIP4]  # CONV_2D with its fused Relu6
    assert "XNNPACK" in tflite["parity"]["localization"]["runtime_note"]
    assert located(artifact(rep, "coreml", "fp32"))["nodes"] == [CONV4]  # MIL keeps conv and clip apart


@pytest.mark.parametrize("kind", ["onnx", "tflite", "coreml"])
def test_corrupted_layer_of_a_trained_mobilenet(tmp_path_factory, tmp_path, kind):
    """MobileNetV2-style (depthwise, residual adds): one convolution deep in the network scaled in
    the artifact only."""
    out = _mobilenet(tmp_path_factory)
    convs = corrupt.onnx_nodes(out / "mobilenet_shapes.onnx", "Conv")
    target = convs[23]  # features.8's projection, read by a residual Add
    bad = tmp_path / f"bad_{kind}"
    if kind == "onnx":
        bad = corrupt.scale_onnx_weight(out / "mobilenet_shapes.onnx", bad.with_suffix(".onnx"), target.name, 1.5)
    elif kind == "tflite":
        ops = corrupt.tflite_ops(out / "mobilenet_shapes_fp32.tflite", "CONV_2D", "DEPTHWISE_CONV_2D")
        assert len(ops) == len(convs)
        bad = corrupt.scale_tflite_weights(out / "mobilenet_shapes_fp32.tflite", bad.with_suffix(".tflite"),
                                           ops[23], 1.5)
    else:  # fp16 keeps 1.5x at 30.8 dB, within its threshold: a sign flip is past it
        bad = corrupt.scale_coreml_weight(out / "mobilenet_shapes_fp16.mlpackage", bad.with_suffix(".mlpackage"),
                                          corrupt.coreml_key(target.output[0]), -1.0)
    rep, r = validate(tmp_path, f"{SAMPLES / 'mobilenet_shapes.py'}:load", bad)
    assert r.returncode == 1, r.stderr[-2000:]
    first = located(rep["artifacts"][0])
    assert first["node"] == target.name == "/features/features.8/block/block.2/block.2.0/Conv"
    assert first["nodes"] == [target.name]
    assert first["input_snr_db"] > (50 if kind != "coreml" else 40)
    loc = rep["artifacts"][0]["parity"]["localization"]
    before = loc["layers"][:loc["layers"].index(next(x for x in loc["layers"] if x["node"] == target.name))]
    assert len(before) >= 20 and all(x["passed"] for x in before)  # every layer up to it reproduced


_MOBILENET: dict = {}


def _mobilenet(factory) -> Path:
    if "out" not in _MOBILENET:
        out = factory.mktemp("mobilenet")
        assert convert(out, f"{SAMPLES / 'mobilenet_shapes.py'}:load", "--target", "onnx", "--target", "tflite",
                       "--target", "coreml")["passed"]
        _MOBILENET["out"] = out
    return _MOBILENET["out"]


def test_keras_source(tmp_path):
    """A trained Keras model: its hub comes through tf2onnx, whose node names follow the Keras layers."""
    out = tmp_path / "keras"
    assert convert(out, str(SAMPLES / "shapes_keras.keras"), "--target", "tflite", "--target", "coreml")["passed"]
    ops = corrupt.tflite_ops(out / "shapes_keras_fp32.tflite", "CONV_2D", "DEPTHWISE_CONV_2D")
    bad_tflite = corrupt.scale_tflite_weights(out / "shapes_keras_fp32.tflite", tmp_path / "bad.tflite", ops[3], 1.5)
    bad_coreml = corrupt.scale_coreml_weight(out / "shapes_keras_fp16.mlpackage", tmp_path / "bad.mlpackage",
                                             corrupt.coreml_key("shapes_keras_1/conv2d_6_1/BiasAdd_0"), -1.0)
    rep, _ = validate(tmp_path, str(SAMPLES / "shapes_keras.keras"), bad_tflite, bad_coreml)
    for a in rep["artifacts"]:
        first = located(a)
        assert first["node"] == "shapes_keras_1/conv2d_6_1/BiasAdd", a["path"]
        assert first["rel_l2"] > 0.3


BAD_NAMES = """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    LAYERS = [("0:stem/conv", 3, 8), ("1:block/conv a", 8, 8), ("2/block:conv", 8, 16)]

    def build(path, scaled=None, factor=1.0):
        # Node and tensor names TensorFlow rejects: ':' and spaces, leading digits.
        rng = np.random.default_rng(0)
        inits, nodes = [], []

        def w(name, shape, s=0.3):
            inits.append(numpy_helper.from_array((rng.standard_normal(shape) * s).astype(np.float32), name))
            return name

        x = "x"
        for i, (name, cin, cout) in enumerate(LAYERS):
            k, b = w(f"{name}.weight", (cout, cin, 3, 3)), w(f"{name}.bias", (cout,), 0.1)
            nodes.append(helper.make_node("Conv", [x, k, b], [f"{name}:0"], name=name, pads=[1, 1, 1, 1]))
            nodes.append(helper.make_node("Relu", [f"{name}:0"], [f"{i}:relu:0"], name=f"{i}:relu"))
            x = f"{i}:relu:0"
        nodes.append(helper.make_node("GlobalAveragePool", [x], ["9:gap:0"], name="9:gap"))
        nodes.append(helper.make_node("Flatten", ["9:gap:0"], ["9:flat:0"], name="9:flat"))
        nodes.append(helper.make_node("Gemm", ["9:flat:0", w("head:w", (10, 16)), w("head:b", (10,), 0.1)], ["y"],
                                      name="10:head/gemm", transB=1))
        for t in inits:
            if scaled and t.name == f"{scaled}.weight":
                t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * np.float32(factor), t.name))
        graph = helper.make_graph(nodes, "bad_names",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    """


def test_node_names_tensorflow_rejects(tmp_path):
    """Names with ':' and spaces, starting with digits: the hub renames them for TensorFlow and the
    report gives them back as the user wrote them."""
    ns: dict = {}
    exec(compile(BAD_NAMES.replace("\n    ", "\n"), "bad_names", "exec"), ns)  # noqa: S102 - our own fixture
    ns["build"](tmp_path / "names.onnx")
    ns["build"](tmp_path / "names_scaled.onnx", "1:block/conv a", 2.0)
    out = tmp_path / "out"
    assert convert(out, str(tmp_path / "names_scaled.onnx"), "--target", "onnx", "--target", "tflite",
                   "--target", "coreml", "--quantize", "coreml=fp32")["passed"]
    files = sorted(p for p in out.iterdir() if p.suffix in (".onnx", ".tflite", ".mlpackage"))
    rep, r = validate(tmp_path, str(tmp_path / "names.onnx"), *files)
    assert r.returncode == 1
    for a in rep["artifacts"]:
        first = located(a)
        assert first["node"] == "1:block/conv a", a["path"]
        assert first["rel_l2"] > 0.5
    assert located(artifact(rep, "tflite", "fp32"))["nodes"] == ["1:block/conv a", "1:relu"]


POOL_NET = """
    import torch
    from torch import nn

    class PoolNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.pool = nn.AvgPool2d(3, stride=1, padding=1)  # counts the padding (count_include_pad)
            self.head = nn.Conv2d(8, 4, 1)

        def forward(self, image):
            return self.head(self.pool(torch.relu(self.conv(image))))

    def make():
        torch.manual_seed(0)
        return PoolNet().eval(), torch.rand(1, 3, 16, 16)
    """


def test_lowering_bugs_are_localised_to_their_node(cnn, tmp_path):
    """Files a broken converter could write: an AveragePool that stops counting its padding (ONNX,
    the Inception-v1 case), a Relu6 lowered as a Relu (TFLite's fused activation), a Relu6 clipping
    at 3 (Core ML's clip)."""
    pool_source = f"{write_module(tmp_path / 'pool_net.py', POOL_NET)}:make"
    assert convert(tmp_path / "pool", pool_source, "--target", "onnx")["passed"]
    bad_pool = corrupt.set_onnx_attribute(tmp_path / "pool" / "pool_net.onnx", tmp_path / "pool_bug.onnx",
                                          "/pool/AveragePool", "count_include_pad", 0)
    rep, _ = validate(tmp_path, pool_source, bad_pool)
    first = located(rep["artifacts"][0])
    assert (first["node"], first["op_type"], first["nodes"]) == ("/pool/AveragePool", "AveragePool",
                                                                  ["/pool/AveragePool"])

    ops = corrupt.tflite_ops(cnn / "shapes_cnn_fp32.tflite", "CONV_2D", "DEPTHWISE_CONV_2D")
    relu = corrupt.set_tflite_activation(cnn / "shapes_cnn_fp32.tflite", tmp_path / "relu_bug.tflite", ops[3], "RELU")
    clip = corrupt.set_coreml_scalar(cnn / "shapes_cnn_fp32.mlpackage", tmp_path / "clip_bug.mlpackage",
                                     corrupt.coreml_key(f"{CLIP4}_output_0") + "_beta", 3.0)
    rep, _ = validate(tmp_path, CNN, relu, clip)
    assert located(artifact(rep, "tflite", "fp32"))["nodes"] == [CONV4, CLIP4]
    first = located(artifact(rep, "coreml", "fp32"))
    assert (first["node"], first["op_type"], first["nodes"]) == (CLIP4, "Clip", [CLIP4])


SENSITIVE = f"""
    # The trained CNN with a block int8 cannot hold: a 1x1 convolution that passes its input through
    # but scales channel 0 by 1000, undone by the next one. The float model computes the same
    # function; in int8 the first one's output range is set by that channel, so the others round
    # to a level or two, and the loss shows only after the second one.
    import sys
    sys.path.insert(0, {str(SAMPLES)!r})
    import torch
    from torch import nn
    import shapes_cnn

    class Sensitive(nn.Module):
        def __init__(self, base):
            super().__init__()
            self.head_features, self.tail_features = base.features[:5], base.features[5:]
            self.amplify, self.restore = nn.Conv2d(64, 64, 1), nn.Conv2d(64, 64, 1)
            self.pool, self.head = base.pool, base.head
            with torch.no_grad():
                eye, up = torch.eye(64).reshape(64, 64, 1, 1), torch.ones(64)
                up[0] = 1000.0
                self.amplify.weight.copy_(eye * up.reshape(64, 1, 1, 1))
                self.restore.weight.copy_(eye / up.reshape(1, 64, 1, 1))
                self.amplify.bias.zero_()
                self.restore.bias.zero_()

        def forward(self, x):
            h = self.restore(self.amplify(self.head_features(x)))
            return self.head(torch.flatten(self.pool(self.tail_features(h)), 1))

    def load():
        base, example = shapes_cnn.load()
        return Sensitive(base).eval(), example
    """


def test_int8_isolated_profile_names_the_sensitive_layer(tmp_path):
    """`bridge convert` localises the failing int8 files itself. The cumulative profile first fails
    at the convolution after the culprit (where the lost channels show again); the isolated
    profile, each layer alone and carried to the outputs, names the culprit."""
    out = tmp_path / "out"
    rep = convert(out, f"{write_module(tmp_path / 'sensitive_cnn.py', SENSITIVE)}:load", "--target", "tflite",
                  "--target", "coreml", "--quantize", "tflite=int8", "--quantize", "coreml=int8",
                  "--calibration", SAMPLES / "calibration")
    assert rep["exit_code"] == 1 and report_folder(out).name == ".bridge-failed"
    runs = {(s["stage"], s["cache"]) for s in rep["stage_runs"]}
    assert {("tflite-localize", "uncached"), ("coreml-localize", "uncached")} <= runs  # never cached
    for a in rep["artifacts"]:
        assert a["parity"]["status"] == "failed"
        loc = a["parity"]["localization"]
        assert loc["first_divergent"]["node"] == "/restore/Conv", a["path"]
        worst = loc["isolated"]["worst"]
        assert worst["node"] == "/amplify/Conv", a["path"]
        assert worst["isolated"]["output_snr_db"] < 5
        assert worst["passed"] and worst["snr_db"] > 20  # its own tensor looks fine: the loss hides there
        others = [x for x in loc["layers"] if x["node"] not in ("/amplify/Conv", "/restore/Conv")]
        assert all(x["isolated"]["output_snr_db"] > 25 for x in others), a["path"]
        assert "worst on its own: Conv /amplify/Conv" in a["parity"]["reason"]


def test_debug_command(cnn, tmp_path):
    """`bridge debug` localises a passing artifact too, exit code as validate's; bad input is one
    line and exit 2."""
    r = bridge("debug", CNN, cnn / "shapes_cnn_fp32.tflite", "--report", tmp_path / "r.json",
               "--parity-data", held_out_images(tmp_path / "images"))
    assert r.returncode == 0, r.stderr[-2000:]
    loc = json.loads((tmp_path / "r.json").read_text())["artifacts"][0]["parity"]["localization"]
    assert loc["status"] == "no_divergence" and loc["first_divergent"] is None
    assert loc["samples"] == 4 and len(loc["layers"]) >= 8
    assert all(x["passed"] and x["rel_l2"] < 1e-5 for x in loc["layers"])
    assert "Layers of" in r.stdout and "built-in kernels" in r.stderr

    for args, needle in [((CNN, tmp_path / "missing.tflite"), "missing.tflite"),
                         ((CNN, SAMPLES / "shapes_cnn.py"), "shapes_cnn.py"),
                         ((CNN, cnn / "shapes_cnn_fp32.tflite", "--layers", "-1"), "--layers"),
                         ((CNN,), "artifact")]:
        r = bridge("debug", *args)
        assert r.returncode == 2, (args, r.stderr)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr, r.stderr


def test_no_localize(cnn, tmp_path):
    bad = corrupt.scale_tflite_weights(cnn / "shapes_cnn_fp32.tflite", tmp_path / "bad.tflite",
                                       corrupt.tflite_ops(cnn / "shapes_cnn_fp32.tflite", "CONV_2D")[0], 2.0)
    rep, r = validate(tmp_path, CNN, bad, args=("--no-localize",))
    assert r.returncode == 1 and "localization" not in rep["artifacts"][0]["parity"]
    assert "Localising" not in r.stderr


SEQ = """
    import torch
    from torch import nn

    class Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 64, 3, padding=1)  # weights over 1 KiB: saved as external data
            self.proj = nn.Conv2d(64, 6, 1)

        def forward(self, x):
            return self.proj(torch.relu(self.conv(x)))

    def make():
        torch.manual_seed(0)
        return Seq().eval(), torch.randn(1, 4, 10, 10)
    """


def test_dynamic_axis_and_external_data_hub(tmp_path):
    """A hub saved with external data (as past 2 GB) and a dynamic axis: localisation reads the hub
    as parity does and runs both sizes (its samples are spread over the parity samples). A
    threshold no float file meets makes every artifact fail, so every one is localised. (A dynamic
    batch of a 2-D convolution: onnx2tf 2.6.9's file for a dynamic Conv1d, its SHAPE-GATHER-RESHAPE
    tail, is one XNNPACK cannot reshape, so its parity is not executed and nothing is localised.)"""
    from bridge import ConvertOptions, convert

    source = f"{write_module(tmp_path / 'seq.py', SEQ)}:make"
    rep = convert(source, ConvertOptions(targets=("onnx", "tflite", "coreml"), quantize=("coreml=fp32",),
                                         dynamic=("x:0",), thresholds=("fp32@rel_l2=1e-12",),
                                         out=str(tmp_path / "out"), external_data_bytes=0))
    onnx_file = next(a for a in rep.artifacts if a.target == "onnx")
    assert onnx_file.details["external_data"]
    assert onnx_file.parity.localization["status"] == "not_applicable"  # it is the hub
    for a in rep.artifacts:
        if a.target == "onnx":
            continue
        loc = a.parity.localization
        assert loc["status"] == "localized" and loc["samples"] == 4, loc
        assert [x["node"] for x in loc["layers"]][-1] == "/proj/Conv"
        assert all(x["rel_l2"] < 1e-6 for x in loc["layers"])  # right, judged by a threshold nothing meets
        assert "error" not in loc["isolated"]
        assert loc["sample_indices"] == [0, 5, 10, 15]  # of 8 samples at x:0=1, then 8 at 3
