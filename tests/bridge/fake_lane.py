"""A fake lane for the orchestrator's unit tests, registered in-process (`bridge.lanes.registered`).
Its artifact is the hub's bytes followed by a float32 gain; its runner runs the hub on onnxruntime
and scales the outputs by that gain, so a mode is right (1.0), close (1.001) or wrong (1.5) on
purpose."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bridge.base.errors import ConversionError
from bridge.base.lane import Lane, LaneArtifact, Unsupported, for_each_mode, option
from bridge.base.modes import FP32_PARITY, ModeSpec, Thresholds

GAIN = {"exact": 1.0, "wrong": 1.5, "close": 1.001}


@dataclass(frozen=True)
class FakeOptions:
    refuse: str = field(default="", metadata=option("An op type the preflight refuses."))
    crash: bool = field(default=False, metadata=option("Every mode raises."))


def convert(req) -> list[LaneArtifact]:
    def make(mode: str, art: LaneArtifact) -> None:
        if req.options.crash:
            raise ConversionError(f"{mode} could not be made", stage="fake-convert", node="n1", op_type="Mul")
        path = Path(req.workdir) / f"{req.name}_{mode}.fake"
        path.write_bytes(Path(req.hub_path).read_bytes() + np.float32(GAIN[mode]).tobytes())
        art.path = str(path)

    return for_each_mode(req.modes, make, stage="fake-convert", route=("onnx", "fake"))


def preflight(hub_path, node_names, options) -> list[Unsupported]:
    import onnx

    graph = onnx.load(hub_path, load_external_data=False).graph
    nodes = tuple(n.name for n in graph.node if n.op_type == options.refuse)
    return [Unsupported(options.refuse, nodes)] if nodes else []


class FakeRunner:
    runtime = "fake"

    def load(self, path: str) -> None:
        import onnxruntime as ort

        data = Path(path).read_bytes()
        self.gain = float(np.frombuffer(data[-4:], np.float32)[0])
        self.session = ort.InferenceSession(data[:-4], providers=["CPUExecutionProvider"])
        self.names = [o.name for o in self.session.get_outputs()]

    def infer(self, feed):
        return {n: o * np.float32(self.gain) for n, o in zip(self.names, self.session.run(self.names, feed),
                                                                strict=True)}


LANE = Lane(
    name="fake",
    suffix=".fake",
    modes=(ModeSpec("exact", FP32_PARITY, description="the hub"),
           ModeSpec("close", Thresholds(snr_db_min=50.0), description="off by 0.1%"),
           ModeSpec("wrong", FP32_PARITY, description="off by 50%")),
    default=("exact",),
    convert="tests.bridge.fake_lane:convert",
    runner="tests.bridge.fake_lane:FakeRunner",
    preflight="tests.bridge.fake_lane:preflight",
    options=FakeOptions,
)


def tiny_onnx(folder: Path, *, output: str = "y", relu: bool = False) -> str:
    """A 4x4 MatMul (optionally followed by Relu) saved as `folder/tiny.onnx`: a real ONNX source
    small enough for orchestration tests."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.linspace(-1, 1, 16, dtype=np.float32).reshape(4, 4), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h" if relu else output], name="mm")]
    if relu:
        nodes.append(helper.make_node("Relu", ["h"], [output], name="act"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info(output, TensorProto.FLOAT, [1, 4])], initializer=[w])
    path = folder / "tiny.onnx"
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return str(path)
