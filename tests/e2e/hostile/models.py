"""Small ONNX files and Python entrypoints the hostile cases are built from."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np


def _onnx():
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    return onnx, TensorProto, helper, numpy_helper


def save(model, path: Path) -> Path:
    onnx, *_ = _onnx()
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def model(nodes, inputs, outputs, initializers=(), functions=(), opset=17, name="g", **kwargs):
    onnx, TensorProto, helper, _ = _onnx()
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=list(initializers), **kwargs)
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(f.domain, 1) for f in functions
                                                   if f.domain]
    m = helper.make_model(graph, opset_imports=list({(i.domain, i.version): i for i in imports}.values()),
                          functions=list(functions))
    m.ir_version = 10
    return m


def vi(name: str, shape, dtype: int = 1):
    _, _, helper, _ = _onnx()
    return helper.make_tensor_value_info(name, dtype, shape)


def tiny(path: Path, *, input_name: str = "x", output_name: str = "y", node_name: str = "scale",
         batch: int | str = 1) -> Path:
    """y = x * 2 on a [batch, 4] float input."""
    _, _, helper, numpy_helper = _onnx()
    two = numpy_helper.from_array(np.full((1, 4), 2.0, np.float32), "two")
    m = model([helper.make_node("Mul", [input_name, "two"], [output_name], name=node_name)],
              [vi(input_name, [batch, 4])], [vi(output_name, [batch, 4])], [two])
    return save(m, path)


def external_tensor(name: str, location: str, shape=(1, 4), offset: int | None = None):
    """A float TensorProto whose bytes live at `location`."""
    _, TensorProto, _, _ = _onnx()
    t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(shape))
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", offset)):
        if value is not None:
            entry = t.external_data.add()
            entry.key, entry.value = key, str(value)
    return t


def with_external_weight(path: Path, location: str) -> Path:
    """y = x * w with `w` an initializer whose bytes live at `location`."""
    _, _, helper, _ = _onnx()
    m = model([helper.make_node("Mul", ["x", "w"], ["y"])], [vi("x", [1, 4])], [vi("y", [1, 4])],
              [external_tensor("w", location)])
    return save(m, path)


def function_default(path: Path, location: str) -> Path:
    """The red-team finding: a model-local function whose Constant takes its value from the
    function's default attribute, and that default's tensor lives at `location`."""
    onnx, TensorProto, helper, _ = _onnx()
    const = helper.make_node("Constant", [], ["c"])
    ref = onnx.AttributeProto(name="value", ref_attr_name="v", type=onnx.AttributeProto.TENSOR)
    const.attribute.append(ref)
    body = [const, helper.make_node("Mul", ["a", "c"], ["b"])]
    default = onnx.AttributeProto(name="v", type=onnx.AttributeProto.TENSOR)
    default.t.CopyFrom(external_tensor("v", location))
    fn = helper.make_function("local", "Leak", ["a"], ["b"], body, [helper.make_opsetid("", 17)],
                              attributes=[])
    fn.attribute_proto.append(default)
    m = model([helper.make_node("Leak", ["x"], ["y"], domain="local")], [vi("x", [1, 4])], [vi("y", [1, 4])],
              functions=[fn])
    return save(m, path)


def nested_if(path: Path, depth: int) -> Path:
    """`If` inside `If` `depth` levels deep down the then-branches (the else-branches are leaves),
    every branch returning x: a few KB whatever the depth."""
    _, TensorProto, helper, numpy_helper = _onnx()

    def leaf(out: str):
        return helper.make_graph([helper.make_node("Identity", ["x"], [out])], "leaf", [], [vi(out, [1, 4])])

    def level(d: int):
        if d == 0:
            return leaf("r0")
        out = f"r{d}"
        node = helper.make_node("If", ["cond"], [out], then_branch=level(d - 1), else_branch=leaf(out))
        return helper.make_graph([node], f"l{d}", [], [vi(out, [1, 4])])

    cond = numpy_helper.from_array(np.array(True), "cond")
    node = helper.make_node("If", ["cond"], ["y"], then_branch=level(depth), else_branch=leaf("y"))
    return save(model([node], [vi("x", [1, 4])], [vi("y", [1, 4])], [cond]), path)


def entrypoint(path: Path, body: str, *, shape=(1, 4)) -> str:
    """A torch entrypoint `file.py:make` whose module runs `body` at call time."""
    path.write_text(textwrap.dedent(f"""
        import torch

        class Twice(torch.nn.Module):
            def forward(self, x):
                return x * 2

        def make():
        {textwrap.indent(textwrap.dedent(body), "    ")}
            return Twice().eval(), torch.randn{tuple(shape)}
        """))
    return f"{path}:make"


def mlpackage(path: Path) -> Path:
    """A Core ML package computing y = x @ w (w 64x64, stored in weights/weight.bin) for x [1, 64]."""
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb

    w = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 64))], opset_version=ct.target.iOS16)
    def prog(x):
        return mb.matmul(x=x, y=w, name="y")

    model = ct.convert(prog, convert_to="mlprogram", compute_precision=ct.precision.FLOAT32,
                       minimum_deployment_target=ct.target.iOS16)
    model.save(str(path))
    return path


def retarget_weights(package: Path, file_name: str) -> None:
    """Point every weight reference of the package's program at `file_name`."""
    from coremltools.proto import Model_pb2

    from bridge.base.protos import walk

    spec_path = package / "Data" / "com.apple.CoreML" / "model.mlmodel"
    spec = Model_pb2.Model()
    spec.ParseFromString(spec_path.read_bytes())
    found = 0
    for msg, _ in walk(spec):
        if msg.DESCRIPTOR.full_name == "CoreML.Specification.MILSpec.Value.BlobFileValue":
            msg.fileName = file_name
            found += 1
    assert found, "coremltools stored no weight in weight.bin: rebuild this case"
    spec_path.write_bytes(spec.SerializeToString())
