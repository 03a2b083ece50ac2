"""A target is a plug-in: a lane outside the tree, registered only through the `bridge.lanes`
entry-point group (a `*.dist-info/entry_points.txt` on PYTHONPATH, as an installed package has),
adds its own mode and threshold, an option group in `bridge convert --help`, a preflight that
refuses an op, and a runner and describer `bridge validate` uses. No file of bridge changes.

The toy format: a header line `TOYLANE1 {json}` followed by the hub's ONNX bytes; its `toy-half`
mode rounds every float initializer to float16 (stored back as float32).
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from tests.conftest import SAMPLES, artifact, bridge, report, report_folder

pytestmark = pytest.mark.slow

DECLARATION = '''
from dataclasses import dataclass, field
from pathlib import Path

from bridge.base.lane import Lane, option
from bridge.base.modes import FP32_PARITY, ModeSpec, Thresholds


@dataclass(frozen=True)
class ToyOptions:
    flavor: str = field(default="plain", metadata=option("Flavor written into every toy file."))


def is_toy(path: Path) -> bool:
    try:
        with Path(path).open("rb") as f:
            return Path(path).is_file() and f.read(9) == b"TOYLANE1 "
    except OSError:
        return False


LANE = Lane(
    name="toy",
    suffix=".toy",
    modes=(ModeSpec("toy-fp32", FP32_PARITY, description="the hub, wrapped"),
           ModeSpec("toy-half", Thresholds(snr_db_min=45.0), description="initializers rounded to float16")),
    default=("toy-fp32",),
    convert="toylane.work:convert",
    runner="toylane.work:ToyRunner",
    describe="toylane.work:describe",
    preflight="toylane.work:preflight",
    recognize=is_toy,
    options=ToyOptions,
    requires=("onnxruntime",),
    extra="onnx",
)
'''

WORK = '''
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from bridge.base.lane import LaneArtifact, Unsupported, for_each_mode

MAGIC = b"TOYLANE1 "


def preflight(hub_path, node_names, options):
    graph = onnx.load(hub_path, load_external_data=False).graph
    tanh = [node_names.get(n.name, n.name) for n in graph.node if n.op_type == "Tanh"]
    return [Unsupported("Tanh", tuple(tanh), "toy kernels have no Tanh")] if tanh else []


def convert(req):
    def make(mode, art):
        model = onnx.load(req.hub_path)
        if mode == "toy-half":
            for t in model.graph.initializer:
                if t.data_type == onnx.TensorProto.FLOAT:
                    half = numpy_helper.to_array(t).astype(np.float16).astype(np.float32)
                    t.CopyFrom(numpy_helper.from_array(half, t.name))
        header = json.dumps({"mode": mode, "flavor": req.options.flavor}).encode()
        path = Path(req.workdir) / f"{req.name}_{mode}.toy"
        path.write_bytes(MAGIC + header + b"\\n" + model.SerializeToString())
        art.path = str(path)
        art.details["flavor"] = req.options.flavor

    return for_each_mode(req.modes, make, stage="toy-convert", route=("onnx", "toy"))


def _read(path):
    data = Path(path).read_bytes()
    header, body = data[len(MAGIC):].split(b"\\n", 1)
    return json.loads(header), body


class ToyRunner:
    runtime = "toy-onnxruntime"

    def load(self, path):
        _, body = _read(path)
        self.session = ort.InferenceSession(body, providers=["CPUExecutionProvider"])
        self.names = [o.name for o in self.session.get_outputs()]

    def infer(self, feed):
        return dict(zip(self.names, self.session.run(self.names, feed)))


def describe(path):
    header, body = _read(path)
    graph = onnx.load_from_string(body).graph
    inits = {t.name for t in graph.initializer}

    def tensor(v):
        t = v.type.tensor_type
        return {"name": v.name, "shape": [d.dim_value for d in t.shape.dim],
                "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name, "quantization": None}

    return {"inputs": [tensor(v) for v in graph.input if v.name not in inits],
            "outputs": [tensor(v) for v in graph.output], "mode": header["mode"]}
'''


@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> dict[str, str]:
    """The toy lane as an installed distribution would leave it on sys.path; the environment a
    `bridge` process needs to find it."""
    root = tmp_path_factory.mktemp("plugins")
    (root / "toylane").mkdir()
    (root / "toylane" / "__init__.py").write_text(textwrap.dedent(DECLARATION))
    (root / "toylane" / "work.py").write_text(textwrap.dedent(WORK))
    info = root / "toylane-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toylane\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[bridge.lanes]\ntoy = toylane:LANE\n")
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}


def test_the_option_group_appears_in_help(plugin):
    r = bridge("convert", "--help", env={**plugin, "COLUMNS": "200"})
    assert r.returncode == 0, r.stderr
    assert "toy lane" in r.stdout and "--toy-flavor" in r.stdout and "Flavor written into every toy file." in r.stdout
    assert "--toy-flavor" not in bridge("convert", "--help", env={"COLUMNS": "200"}).stdout  # only when installed


def test_the_toy_lane_converts_with_its_own_mode_threshold_and_option(plugin, tmp_path):
    out = tmp_path / "out"
    r = bridge("convert", f"{SAMPLES}/shapes_cnn.py:load", "--target", "toy", "--quantize", "toy=toy-fp32,toy-half",
               "--toy-flavor", "spicy", "--out", out, env=plugin)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = report(out)
    fp32, half = artifact(rep, "toy", "toy-fp32"), artifact(rep, "toy", "toy-half")
    assert fp32["parity"]["thresholds"]["output"] == {"rel_l2_max": 1e-4}
    assert half["parity"]["thresholds"]["output"] == {"snr_db_min": 45.0}  # the lane's own threshold
    assert fp32["parity"]["outputs"]["output"]["rel_l2"] <= 1e-6
    assert 45 <= half["parity"]["outputs"]["output"]["snr_db"] < 200  # rounded, so not identical
    assert half["parity"]["runtime"] == "toy-onnxruntime" and half["flavor"] == "spicy"
    assert (out / "shapes_cnn_toy-half.toy").read_bytes().startswith(b'TOYLANE1 {"mode": "toy-half"')
    # A threshold the rounded weights cannot meet fails it, through the same lane declaration.
    r = bridge("convert", f"{SAMPLES}/shapes_cnn.py:load", "--target", "toy", "--quantize", "toy=toy-half",
               "--threshold", "toy-half@snr_db=250", "--out", tmp_path / "strict", env=plugin)
    assert r.returncode == 1, r.stderr[-3000:]
    assert not artifact(report(tmp_path / "strict"), "toy", "toy-half")["parity"]["passed"]

    # validate infers the toy mode from the file alone.
    r = bridge("validate", f"{SAMPLES}/shapes_cnn.py:load", out / "shapes_cnn_toy-half.toy",
               out / "shapes_cnn_toy-fp32.toy", "--report", tmp_path / "v.json", env=plugin)
    assert r.returncode == 0, r.stderr[-3000:]
    checked = json.loads((tmp_path / "v.json").read_text())["artifacts"]
    assert [(a["target"], a["quantization"]) for a in checked] == [("toy", "toy-half"), ("toy", "toy-fp32")]


def test_the_preflight_refuses_an_op_like_any_unsupported_op(plugin, tmp_path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"), helper.make_node("Tanh", ["h"], ["y"],
                                                                                        name="squash")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], initializer=[w])
    path = tmp_path / "tanh.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    r = bridge("convert", path, "--target", "onnx", "--target", "toy", "--out", tmp_path / "out", env=plugin)
    assert r.returncode == 3, r.stderr[-3000:]
    toy = artifact(report(tmp_path / "out"), "toy", "toy-fp32")
    assert toy["error"]["stage"] == "toy-preflight" and toy["error"]["op_type"] == "Tanh"
    assert toy["error"]["node"] == "squash" and "Tanh (squash; toy kernels have no Tanh)" in toy["error"]["message"]
    assert "toy/toy-fp32: stage toy-preflight at Tanh node squash" in r.stderr
    assert artifact(report(tmp_path / "out"), "onnx", "fp32")["parity"]["passed"]
    assert report_folder(tmp_path / "out").name == ".bridge-failed"
    r = bridge("inspect", path, "--json", env=plugin)
    assert json.loads(r.stdout)["lanes"]["toy"]["unsupported_ops"] == ["Tanh"]


def test_without_the_plugin_the_target_is_unknown(tmp_path):
    r = bridge("convert", f"{SAMPLES}/shapes_cnn.py:load", "--target", "toy", "--out", tmp_path / "out")
    assert r.returncode == 2 and "unknown target 'toy'; valid targets: onnx, tflite, coreml" in r.stderr
    assert Path(tmp_path / "out").exists() is False
