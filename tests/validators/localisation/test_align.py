"""The aligner and the profile on graphs written out by hand: no framework, real metrics."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.base.modes import FP32_PARITY, FULL_INT
from bridge.validators.localisation.align import Hub, View, views
from bridge.validators.localisation.graph import TracedGraph, TracedOp
from bridge.validators.localisation.profile import align_layers, first_divergent, isolated_worst


def test_views_move_channels_and_drop_unit_axes():
    nhwc, nchw = (1, 8, 6, 4), (1, 4, 8, 6)
    [view] = views(nhwc, nchw)
    assert view.perm == (0, 3, 1, 2)
    x = np.random.default_rng(0).standard_normal(nchw).astype(np.float32)
    a = x.transpose(0, 2, 3, 1)  # what a channel-last artifact holds
    np.testing.assert_array_equal(view.to_hub(a), x)
    np.testing.assert_array_equal(view.to_artifact(x), a)
    [squeezed] = views((1, 1, 1, 16), (1, 16))  # a global pool's [1,1,1,C] against a flattened [1,C]
    assert squeezed.to_hub(np.arange(16.0).reshape(1, 1, 1, 16)).shape == (1, 16)
    assert views((1, 8, 6, 4), (1, 4, 8, 5)) == []  # no layout explains another size
    # ambiguous squares: the identity comes first, the channel moves next
    assert [v.perm for v in views((1, 4, 4, 4), (1, 4, 4, 4))][:2] == [None, (0, 3, 1, 2)]


def _conv(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """A 1x1 convolution, NCHW."""
    return np.einsum("nchw,oc->nohw", x, w).astype(np.float32)


def _hub_and_values(x: np.ndarray, w1: np.ndarray, w2: np.ndarray):
    """x -> Conv c1 -> Relu6 r1 -> Conv c2 -> Relu r2 -> Transpose-free head (y = r2)."""
    ops = (TracedOp("/a/Conv", "Conv", ("x", "w1"), ("c1",)), TracedOp("/a/Clip", "Clip", ("c1",), ("r1",)),
           TracedOp("/b/Conv", "Conv", ("r1", "w2"), ("c2",)), TracedOp("/b/Relu", "Relu", ("c2",), ("y",)))
    c1 = _conv(x, w1)
    r1 = np.clip(c1, 0, 6)
    c2 = _conv(r1, w2)
    y = np.maximum(c2, 0)
    return TracedGraph(ops, {"x": "x"}, {"y": "y"}), {"x": x, "c1": c1, "r1": r1, "c2": c2, "y": y}


def _artifact(hub_values: dict, w2: np.ndarray):
    """A channel-last artifact that fused each Conv with its activation (and pads first, as TFLite
    does before a 3x3 convolution: a tensor of its own that nothing in the hub holds)."""
    nhwc = (0, 2, 3, 1)
    x = hub_values["x"].transpose(nhwc)
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    a1 = hub_values["r1"].transpose(nhwc)
    a2 = np.maximum(_conv(a1.transpose(0, 3, 1, 2), w2), 0).transpose(nhwc)
    ops = (TracedOp("PAD#0", "PAD", ("t0",), ("t1",)), TracedOp("CONV_2D#1", "CONV_2D", ("t1", "k1"), ("t2",)),
           TracedOp("CONV_2D#2", "CONV_2D", ("t2", "k2"), ("t3",)))
    return TracedGraph(ops, {"x": "t0"}, {"y": "t3"}), {"t0": x, "t1": padded, "t2": a1, "t3": a2}


def _localize(hub_graph, hub_values, art_graph, art_values, thresholds=FP32_PARITY):
    hub = Hub(hub_graph, hub_values)
    declared = {"t0": ("x", "interface", View((1, 5, 5, 4), (1, 4, 5, 5), (1, 5, 5, 4), (0, 3, 1, 2))),
                "t3": ("y", "interface", View((1, 5, 5, 3), (1, 3, 5, 5), (1, 5, 5, 3), (0, 3, 1, 2)))}
    return align_layers(hub, art_graph, art_values, declared, thresholds, lambda h: [hub_values[h]],
                        lambda t: [art_values[t]])


@pytest.fixture
def model():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 4, 5, 5)).astype(np.float32) * 3
    return x, rng.standard_normal((6, 4)).astype(np.float32), rng.standard_normal((3, 6)).astype(np.float32)


def test_fused_artifact_maps_to_the_activation_with_its_group(model):
    x, w1, w2 = model
    hub_graph, hub_values = _hub_and_values(x, w1, w2)
    art_graph, art_values = _artifact(hub_values, w2)
    matches, layers = _localize(hub_graph, hub_values, art_graph, art_values)
    assert "t1" not in matches  # the padded copy is the artifact's own
    assert matches["t2"].hub == "r1" and matches["t2"].how == "value" and matches["t2"].view.perm == (0, 3, 1, 2)
    assert [(layer.hub, layer.nodes) for layer in layers] == [("r1", [0, 1]), ("y", [2, 3])]
    assert all(layer.passed for layer in layers)
    assert first_divergent(layers, {"y"}) is None


def test_a_wrong_layer_is_the_first_divergent_with_passing_inputs(model):
    x, w1, w2 = model
    hub_graph, hub_values = _hub_and_values(x, w1, w2)
    bad = dict(hub_values, r1=np.clip(_conv(x, w1 * 1.5), 0, 6))  # the first fused op computes wrongly
    art_graph, art_values = _artifact(bad, w2)
    matches, layers = _localize(hub_graph, hub_values, art_graph, art_values)
    assert matches["t2"].how == "structure" and matches["t2"].hub == "r1"  # matches nothing: the frontier
    first = first_divergent(layers, {"y"})
    assert first.hub == "r1" and first.nodes == [0, 1]  # Conv and Clip, fused
    assert first.metrics.rel_l2 > 0.1
    assert not layers[1].passed  # the error travels on, but its input already failed


def test_onset_that_reaches_an_output_wins_over_one_that_fades():
    """A layer can cross the threshold and recover (float error near a threshold); the first onset
    whose failure reaches a failing output is the culprit."""
    from bridge.validators.compare import metrics
    from bridge.validators.localisation.profile import Layer

    ok = metrics(np.ones(10), np.ones(10))
    bad = metrics(np.ones(10) * 2, np.ones(10))

    def layer(hub, inputs, m):
        return Layer(hub, None, inputs, [], metrics=m, reasons=[] if m is ok else ["off"])

    layers = [layer("a", [], bad), layer("b", ["a"], ok), layer("c", ["b"], bad), layer("y", ["c"], bad)]
    assert first_divergent(layers, {"y"}).hub == "c"
    assert first_divergent(layers[:2], {"y"}).hub == "a"  # no failure reaches an output: the earliest onset


def test_isolated_worst_prefers_what_costs_the_outputs(model):
    from bridge.validators.compare import metrics
    from bridge.validators.localisation.profile import Layer

    local_good, local_bad = metrics(np.ones(9) * 1.01, np.ones(9)), metrics(np.ones(9) * 1.5, np.ones(9))
    out_good, out_bad = metrics(np.ones(9) * 1.001, np.ones(9)), metrics(np.ones(9) * 3, np.ones(9))
    a = Layer("a", None, [], [], isolated=local_good, propagated=out_bad)  # looks fine, ruins the outputs
    b = Layer("b", None, ["a"], [], isolated=local_bad, propagated=out_good)
    assert isolated_worst([a, b]) is a
    c = Layer("c", None, ["a"], [], isolated=local_good, propagated=out_bad)  # inherits a's int8 rounding
    assert isolated_worst([a, c]) is a
    exact = metrics(np.ones(9), np.ones(9))  # a layer's own error that never reaches the outputs
    d = Layer("d", None, [], [], isolated=local_good, propagated=exact)
    e = Layer("e", None, ["d"], [], isolated=local_bad, propagated=exact)
    assert isolated_worst([d, e]) is e
    assert FULL_INT.snr_db_min == 15  # the int8 thresholds these figures are judged with elsewhere


def test_declared_names_correspondence_and_interface():
    """What maps without looking at values: the bindings, a converter's correspondence report
    (onnx2tf 2.x writes one per ONNX output), our MIL names (`_cast_fp16` appended by coremltools),
    ONNX names; a name that several artifact tensors share goes to the last (a lowering's result)."""
    from bridge.base.bindings import IO, Binding
    from bridge.base.modes import FP32_PARITY
    from bridge.validators.localisation.stage import LocalizeRequest, _declared

    hub = TracedGraph((TracedOp("/a/Conv", "Conv", ("x",), ("/a/Conv_output_0",)),
                       TracedOp("/b/Relu", "Relu", ("/a/Conv_output_0",), ("relu:0",)),
                       TracedOp("/c/Add", "Add", ("relu:0",), ("y",))), {"x": "x"}, {"y": "y"})
    hub0 = {"x": np.zeros((1, 2, 3, 3)), "/a/Conv_output_0": np.zeros((1, 4, 3, 3)), "relu:0": np.zeros((1, 4, 3, 3)),
            "y": np.zeros((1, 4, 3, 3))}
    art = TracedGraph((TracedOp("conv", "conv", ("in",), ("_a_Conv_output_0",)),
                       TracedOp("conv2", "add", ("_a_Conv_output_0",), ("_a_Conv_output_0_cast_fp16",)),
                       TracedOp("k", "CONV_2D", ("_a_Conv_output_0_cast_fp16",), ("t7",)),
                       TracedOp("out", "ADD", ("t7",), ("t9",))),
                      {"x_in": "in"}, {"y_out": "t9"}, {"t7": "model/tf.nn.relu/Relu"})
    art0 = {t: np.zeros((1, 3, 3, 4)) for t in ("_a_Conv_output_0", "_a_Conv_output_0_cast_fp16", "t7", "t9")}
    art0["in"] = np.zeros((1, 3, 3, 2))
    io = IO((Binding("x", "x_in", (1, 3, 3, 2), "float32", (0, 2, 3, 1)),),
            (Binding("y", "y_out", (1, 3, 3, 4), "float32", (0, 2, 3, 1)),))
    req = LocalizeRequest("a", "t", "h", "", "", [], io, FP32_PARITY,
                          correspondence={"relu:0": "model/tf.nn.relu/Relu", "gone": "t9"})
    found = _declared(req, art, hub, art0, hub0)
    assert found["_a_Conv_output_0_cast_fp16"][:2] == ("/a/Conv_output_0", "name")  # the last of the two
    assert "_a_Conv_output_0" not in found
    assert found["t7"][:2] == ("relu:0", "correspondence")
    assert found["in"][:2] == ("x", "interface") and found["in"][2].perm == (0, 3, 1, 2)
    assert found["t9"][:2] == ("y", "interface")


def test_correspondence_of_a_fused_group_is_its_last_tensor():
    """onnx2tf 2.x resolves a Conv's output and its Relu's to the one fused CONV_2D tensor (both
    records say so): that tensor holds the Relu's values, whichever record comes first."""
    from bridge.validators.localisation.stage import _corresponding

    hub = TracedGraph((TracedOp("/a/Conv", "Conv", ("x",), ("conv",)),
                       TracedOp("/a/Relu", "Relu", ("conv",), ("relu",)),
                       TracedOp("/b/Conv", "Conv", ("relu",), ("y",))), {"x": "x"}, {"y": "y"})
    art = TracedGraph((TracedOp("k", "CONV_2D", ("t0",), ("t1",)), TracedOp("m", "CONV_2D", ("t1",), ("t2",))),
                      {"x": "t0"}, {"y": "t2"}, {"t1": "/b/Conv_input_nhwc", "t2": "y"})
    order = {"t1": 0, "t2": 1}
    for report in ({"conv": "/b/Conv_input_nhwc", "relu": "/b/Conv_input_nhwc"},
                   {"relu": "/b/Conv_input_nhwc", "conv": "/b/Conv_input_nhwc"}):
        assert _corresponding(report, art, hub, {"conv", "relu", "y"}, order, {}, {}) == {"t1": "relu"}
    assert _corresponding({"conv": "/b/Conv_input_nhwc", "y": "missing"}, art, hub, {"conv", "y"}, order, {}, {}) \
        == {"t1": "conv"}


def test_correspondence_of_a_node_folded_into_its_reader_is_read_by_size():
    """onnx2tf folds a hard-swish's Div by 6 into the next Mul's constant and reports the Div's
    output at the product before it (PP-OCRv4 det): that tensor holds the product, six times the
    Div's value, so it is the product's; a fused Relu that leaves the size about the same stays the
    group's last tensor."""
    from bridge.validators.localisation.stage import _corresponding

    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (1, 8, 4, 4)).astype(np.float32)
    product = x * np.clip(x + 3, 0, 6)
    hub = TracedGraph((TracedOp("mul", "Mul", ("x",), ("prod",)), TracedOp("div", "Div", ("prod",), ("hswish",)),
                       TracedOp("relu", "Relu", ("hswish",), ("y",))), {"x": "x"}, {"y": "y"})
    art = TracedGraph((TracedOp("k", "MUL", ("t0",), ("t1",)),), {"x": "t0"}, {"y": "t1"}, {"t1": "prod"})
    report = {"prod": "prod", "hswish": "prod"}
    hub0 = {"prod": product, "hswish": product / 6, "y": np.maximum(product / 6, 0)}
    art0 = {"t1": product.transpose(0, 2, 3, 1) * np.float32(1.01)}  # NHWC, a little int8 error
    assert _corresponding(report, art, hub, set(hub0), {"t1": 0}, art0, hub0) == {"t1": "prod"}
    art0 = {"t1": art0["t1"] / 6}  # had onnx2tf computed the Div: the Div's
    assert _corresponding(report, art, hub, set(hub0), {"t1": 0}, art0, hub0) == {"t1": "hswish"}


def test_onnx2tf_layout_names_map_without_the_report():
    """`<node>_input_nhwc` is the hub node's data input, `<node>_output_nhwc` its output; a padded
    copy and a name whose node the hub lacks map to nothing."""
    from bridge.validators.localisation.stage import _relaid

    hub = TracedGraph((TracedOp("/a/Conv", "Conv", ("x", "w"), ("conv",)),
                       TracedOp("/b/MaxPool", "MaxPool", ("conv",), ("pool",)),
                       TracedOp("/c/Conv", "Conv", ("pool", "w2"), ("y",))), {"x": "x"}, {"y": "y"})
    names = {"t1": "/b/MaxPool_input_nhwc", "t2": "/b/MaxPool_output_nhwc", "t3": "/c/Conv_input_nhwc_padded",
             "t4": "/z/Conv_input_nhwc", "t5": "y"}
    art = TracedGraph(tuple(TracedOp(f"op{i}", "X", (), (t,)) for i, t in enumerate(names)), {"x": "t0"},
                      {"y": "t5"}, names)
    assert _relaid(art, hub, {"conv", "pool", "y"}, {t: i for i, t in enumerate(names)}) == \
        {"t1": "conv", "t2": "pool"}
