"""Build small ONNX graphs, lower them with our Core ML converters, compare with onnxruntime.

There is no Core ML runtime on Linux. `check(...)` asserts the graph converts, ct.convert accepts
the program, the MIL output shapes equal onnxruntime's and the expected MIL ops are present.
`run_reference(...)` saves the converted model and runs it with our Core ML reference executor
(`parity(...)` does both and compares values). `numeric(...)` and `lowered_three_ways(...)`
compare values MIL evaluates at conversion time (all inputs constant).
"""

from __future__ import annotations

import contextlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
_NP_TO_ONNX = {np.dtype("float32"): TensorProto.FLOAT, np.dtype("int64"): TensorProto.INT64,
               np.dtype("int32"): TensorProto.INT32, np.dtype("bool"): TensorProto.BOOL,
               np.dtype("float16"): TensorProto.FLOAT16}


def graph(nodes, inputs: dict[str, np.ndarray], outputs: list[str], initializers: dict[str, np.ndarray] | None = None,
          opset: int = OPSET):
    """A model with the given nodes; `inputs` give names, shapes and dtypes (and sample values).
    Output types and shapes come from ONNX shape inference."""
    g = helper.make_graph(
        nodes, "test",
        [helper.make_tensor_value_info(n, _NP_TO_ONNX[a.dtype], list(a.shape)) for n, a in inputs.items()],
        [],
        initializer=[numpy_helper.from_array(v, n) for n, v in (initializers or {}).items()],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    inferred = {vi.name: vi for vi in onnx.shape_inference.infer_shapes(model).graph.value_info}
    for name in outputs:
        model.graph.output.append(inferred[name])
    return model


def onnxruntime(model, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in s.get_outputs()]
    return dict(zip(names, s.run(names, feed), strict=True))


def convert(model, target: str = "iOS16", precision: str = "fp32"):
    """Our converters, then coremltools' pipeline. Returns (Built, the MLModel ct.convert made)."""
    import coremltools as ct

    from bridge.converters.coreml.build import build_program

    built = build_program(model, getattr(ct.target, target))
    ml = ct.convert(built.program, convert_to="mlprogram", minimum_deployment_target=getattr(ct.target, target),
                    compute_precision=ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16,
                    skip_model_load=True)
    return built, ml


def lower(model, target: str = "iOS16", precision: str = "fp32"):
    """Our converters, then coremltools' pipeline. Returns (Built, program after ct.convert)."""
    built, ml = convert(model, target, precision)
    return built, ml._mil_program


def run_reference(model, feed: dict[str, np.ndarray], *, target: str = "iOS16", precision: str = "fp32",
                  converted=None) -> dict[str, np.ndarray]:
    """Lower `model` (or take `converted`, a `convert` result), save it as an .mlpackage and run that
    with the Core ML reference executor; returns every output under its ONNX name."""
    import tempfile
    from pathlib import Path

    from bridge.validators.runners.coreml_reference import ReferenceRunner

    built, ml = converted or convert(model, target, precision)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "model.mlpackage")
        ml.save(path)
        runner = ReferenceRunner()
        runner.load(path)
        got = runner.infer({built.inputs[name]: value for name, value in feed.items()})
    return {name: got[feature] for name, feature in built.outputs.items()}


def op_types(program) -> list[str]:
    return [op.op_type for op in program.functions["main"].operations]


def check(model, feed: dict[str, np.ndarray], *, expect_ops: tuple[str, ...] = (), target: str = "iOS16"):
    """Lower `model` and assert every output's shape and dtype match onnxruntime; returns the program."""
    built, program = lower(model, target)
    _check_lowered(onnxruntime(model, feed), built, program, expect_ops)
    return program


def _check_lowered(ref, built, program, expect_ops):
    func = program.functions["main"]
    outs = {v.name: v for v in func.outputs}
    for name, value in ref.items():
        var = outs[built.outputs[name]]
        assert tuple(int(d) for d in var.shape) == value.shape, f"{name}: MIL {var.shape} vs onnxruntime {value.shape}"
    present = set(op_types(program))
    for op in expect_ops:
        assert op in present, f"{op} not in {sorted(present)}"


def parity(model, feed: dict[str, np.ndarray], *, expect_ops: tuple[str, ...] = (), want=None, rtol: float,
           atol: float):
    """`check`, then the saved model run by the reference executor compared with `want` (default:
    onnxruntime). One ct.convert serves both."""
    ref = onnxruntime(model, feed)
    built, ml = convert(model)
    _check_lowered(ref, built, ml._mil_program, expect_ops)
    got = run_reference(model, feed, converted=(built, ml))
    for name, value in (want or ref).items():
        np.testing.assert_allclose(got[name], value, rtol=rtol, atol=atol, err_msg=name)


def numeric(model, expected: dict[str, np.ndarray] | None = None, rtol: float = 1e-5, atol: float = 1e-6):
    """For graphs whose inputs are all initializers: MIL folds them; compare with onnxruntime."""
    ref = expected or onnxruntime(model, {})
    built, program = lower(model)
    outs = {v.name: v for v in program.functions["main"].outputs}
    for name, value in ref.items():
        got = outs[built.outputs[name]].val
        assert got is not None, f"{name} was not folded to a constant"
        np.testing.assert_allclose(np.asarray(got), value, rtol=rtol, atol=atol)


def lowered_three_ways(monkeypatch, nodes, data: dict[str, np.ndarray], outputs: list[str], *, opset: int = 17,
                       initializers: dict[str, np.ndarray] | None = None, mil_values: bool = True, rtol=1e-5,
                       atol=1e-6):
    """1. `data` as initializers hidden from Context.const: the converters emit MIL ops with constant
    operands and MIL's value inference evaluates them. 2. `data` as ordinary initializers: the numpy
    fold. Both compare values with onnxruntime. 3. `data` as graph inputs: ct.convert accepts the
    program and output shapes match onnxruntime's."""
    folded = graph(nodes, {}, outputs, {**data, **(initializers or {})}, opset=opset)
    if mil_values:
        assert_values(folded, rtol=rtol, atol=atol, monkeypatch=monkeypatch, hidden=data)
    assert_values(folded, rtol=rtol, atol=atol)
    return check(graph(nodes, data, outputs, initializers, opset=opset), data)


def assert_values(model, *, rtol, atol, monkeypatch=None, hidden=()):
    """harness.numeric without ct.convert (its passes fold with the same MIL value inference, and
    cost most of a second each). With `hidden`, those initializers are unreadable by Context.const,
    so no converter folds them to numpy: what gets compared is MIL's evaluation of the ops we emit."""
    import coremltools

    from bridge.converters.coreml.build import build_program
    from bridge.converters.coreml.context import Context

    expected = onnxruntime(model, {})
    with monkeypatch.context() if monkeypatch else contextlib.nullcontext() as m:
        if hidden:
            const = Context.const
            m.setattr(Context, "const", lambda self, name: None if name in hidden else const(self, name))
        built = build_program(model, coremltools.target.iOS16)
    outs = {v.name: v for v in built.program.functions["main"].outputs}
    for name, value in expected.items():
        got = outs[built.outputs[name]].val
        assert got is not None, f"{name} was not folded to a constant"
        np.testing.assert_allclose(np.asarray(got), value, rtol=rtol, atol=atol, err_msg=name)


def export_torch(torch, module, example):
    import io

    import onnx

    buffer = io.BytesIO()
    torch.onnx.export(module, (example,), buffer, input_names=["x"], opset_version=17, dynamo=False)
    return onnx.load_from_string(buffer.getvalue())
