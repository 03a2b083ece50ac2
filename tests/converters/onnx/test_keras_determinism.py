"""The same Keras source gives the same hub ONNX bytes, run after run.

tf2onnx's optimizers walk node lists rebuilt from sets of nodes hashed by address, and consumers
kept in sets of names, so which of two duplicate nodes survived, the order of the graph and the
counter numbers in names (`const_fold_opt__28`) changed from run to run. The export keeps tf2onnx's
nodes in graph order while it converts, then orders the graph and renumbers those names from its
structure alone.
"""

from __future__ import annotations

import hashlib

import pytest

from tests.conftest import SAMPLES, bridge, report

onnx = pytest.importorskip("onnx")
helper = onnx.helper


def _hub_sha256s(source, tmp_path, runs: int, env=lambda run: None) -> list[str]:
    """Convert `source` to ONNX `runs` times; each report's sha256, checked against the file's bytes."""
    hashes = []
    for i in range(runs):
        out = tmp_path / f"out{i}"
        r = bridge("convert", source, "--target", "onnx", "--out", out, "--no-cache", env=env(i))
        assert r.returncode == 0, r.stderr[-3000:]
        (art,) = report(out)["artifacts"]
        assert hashlib.sha256((out / art["path"]).read_bytes()).hexdigest() == art["sha256"]
        hashes.append(art["sha256"])
    return hashes


@pytest.mark.slow
def test_keras_sample_hub_is_byte_identical(tmp_path):
    hashes = _hub_sha256s(SAMPLES / "shapes_keras.keras", tmp_path, runs=4)
    assert len(set(hashes)) == 1, hashes


def _branches(path):
    """Three branches off one tensor through identical sigmoid gates, which tf2onnx merges; each
    with kernels it transposes and folds, a residual Add whose result feeds a Conv and a Multiply
    (tf2onnx creates a Transpose pair per consumer), and two outputs."""
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    image = keras.Input((16, 16, 3), name="image")
    stem = keras.layers.Conv2D(8, 3, padding="same", name="stem")(image)
    outputs = []
    for i in range(3):
        x = keras.layers.Activation("sigmoid", name=f"gate_{i}")(stem)
        y = keras.layers.DepthwiseConv2D(3, padding="same", name=f"depthwise_{i}")(x)
        y = keras.layers.BatchNormalization(name=f"norm_{i}")(y)
        x = keras.layers.ReLU(name=f"relu_{i}")(keras.layers.Add(name=f"add_{i}")([x, y]))
        z = keras.layers.GlobalAveragePooling2D(name=f"pool_{i}")(keras.layers.Conv2D(4, 1, name=f"proj_{i}")(x))
        outputs.append(keras.layers.Dense(2 + i, name=f"head_{i}")(z))
        outputs.append(keras.layers.Flatten(name=f"flat_{i}")(keras.layers.Multiply(name=f"square_{i}")([x, x])))
    keras.Model(image, outputs).save(path)
    return path


@pytest.mark.slow
def test_folded_branches_hub_is_byte_identical(tmp_path):
    """Two string-hash seeds: tf2onnx keeps consumers in sets of names, so the order it creates nodes
    in differs between them (the address-hashed node sets differ between any two runs)."""
    source = _branches(tmp_path / "branches.keras")
    hashes = _hub_sha256s(source, tmp_path, runs=2, env=lambda run: {"PYTHONHASHSEED": str(run + 1)})
    assert len(set(hashes)) == 1, hashes


def _graph(numbers: dict[str, int], node_order: list[int], init_order: list[int]):
    """x -> Transpose -> (Relu -> Add const -> y, Mul const -> z), tf2onnx-style names."""
    n = {k: f"__{v}" for k, v in numbers.items()}
    nodes = [
        helper.make_node("Transpose", ["x"], [f"t{n['t']}:0"], name=f"t{n['t']}", perm=[0, 2, 1]),
        helper.make_node("Relu", [f"t{n['t']}:0"], ["relu:0"], name="relu"),
        helper.make_node("Add", ["relu:0", f"const_fold_opt{n['a']}"], ["y"], name=f"Add{n['add']}"),
        helper.make_node("Mul", [f"t{n['t']}:0", f"const_fold_opt{n['m']}"], ["z"], name=f"Mul{n['mul']}"),
    ]
    inits = [helper.make_tensor(f"const_fold_opt{n['a']}", onnx.TensorProto.FLOAT, [1], [1.0]),
             helper.make_tensor(f"const_fold_opt{n['m']}", onnx.TensorProto.FLOAT, [1], [2.0])]
    value = [helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [1, 3, f"unk{n['unk']}"])
             for name in ("x", "y", "z")]
    return helper.make_graph([nodes[i] for i in node_order], "g", value[:1], value[1:],
                             initializer=[inits[i] for i in init_order])


def test_counter_numbers_and_node_order_do_not_reach_the_bytes():
    from bridge.converters.onnx.keras_source import _canonicalize

    one = _graph({"t": 7, "a": 28, "m": 29, "add": 9, "mul": 12, "unk": 3}, [0, 1, 2, 3], [0, 1])
    two = _graph({"t": 8, "a": 30, "m": 28, "add": 31, "mul": 13, "unk": 5}, [0, 3, 1, 2], [1, 0])
    _canonicalize(one)
    _canonicalize(two)
    assert one.SerializeToString() == two.SerializeToString()
    assert [i.name for i in one.input] + [o.name for o in one.output] == ["x", "y", "z"]
    assert [n.name for n in one.node] == ["t__1", "relu", "Add__2", "Mul__4"]
    assert [t.name for t in one.initializer] == ["const_fold_opt__3", "const_fold_opt__5"]
    onnx.checker.check_model(helper.make_model(one), full_check=True)


def test_a_renumbered_name_never_takes_a_graph_output_name():
    from bridge.converters.onnx.keras_source import _canonicalize

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["t__9"]), helper.make_node("Neg", ["t__9"], ["t__1"])], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("t__1", onnx.TensorProto.FLOAT, [2])])
    _canonicalize(graph)
    assert [list(n.output) for n in graph.node] == [["t__1_"], ["t__1"]]
    onnx.checker.check_model(helper.make_model(graph), full_check=True)
