"""Build small ONNX graphs, lower them with our Core ML converters, compare with onnxruntime.

There is no Core ML runtime on Linux, so until the reference executor lands these checks are:
the graph converts, ct.convert accepts the program, the MIL output shapes and dtypes equal
onnxruntime's, and the expected MIL ops are present. `numeric(...)` compares values when MIL could
evaluate the whole graph at conversion time (all inputs constant).
"""

from __future__ import annotations

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


def lower(model, target: str = "iOS16", precision: str = "fp32"):
    """Our converters, then coremltools' pipeline. Returns (Built, program after ct.convert)."""
    import coremltools as ct

    from bridge.converters.coreml.build import build_program

    built = build_program(model, getattr(ct.target, target))
    ml = ct.convert(built.program, convert_to="mlprogram", minimum_deployment_target=getattr(ct.target, target),
                    compute_precision=ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16,
                    skip_model_load=True)
    return built, ml._mil_program


def op_types(program) -> list[str]:
    return [op.op_type for op in program.functions["main"].operations]


def check(model, feed: dict[str, np.ndarray], *, expect_ops: tuple[str, ...] = (), target: str = "iOS16"):
    """Lower `model` and assert every output's shape and dtype match onnxruntime; returns the program."""
    ref = onnxruntime(model, feed)
    built, program = lower(model, target)
    func = program.functions["main"]
    outs = {v.name: v for v in func.outputs}
    for name, value in ref.items():
        var = outs[built.outputs[name]]
        assert tuple(int(d) for d in var.shape) == value.shape, f"{name}: MIL {var.shape} vs onnxruntime {value.shape}"
    present = set(op_types(program))
    for op in expect_ops:
        assert op in present, f"{op} not in {sorted(present)}"
    return program


def numeric(model, expected: dict[str, np.ndarray] | None = None, rtol: float = 1e-5, atol: float = 1e-6):
    """For graphs whose inputs are all initializers: MIL folds them; compare with onnxruntime."""
    ref = expected or onnxruntime(model, {})
    built, program = lower(model)
    outs = {v.name: v for v in program.functions["main"].outputs}
    for name, value in ref.items():
        got = outs[built.outputs[name]].val
        assert got is not None, f"{name} was not folded to a constant"
        np.testing.assert_allclose(np.asarray(got), value, rtol=rtol, atol=atol)
