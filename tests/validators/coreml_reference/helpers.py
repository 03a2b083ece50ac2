"""Build MIL programs in code, save them as .mlpackage, run them back through the reference runner.

Op tests put many cases in one program (one output per case) so each family pays for one
ct.convert; every case is still its own test, compared with an independent implementation
(PyTorch, onnxruntime, TensorFlow or plain numpy) of the same math.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def rel_l2(got: np.ndarray, want: np.ndarray) -> float:
    want = np.asarray(want, dtype=np.float64)
    return float(np.linalg.norm(np.asarray(got, dtype=np.float64) - want) / max(np.linalg.norm(want), 1e-30))


def snr_db(got: np.ndarray, want: np.ndarray) -> float:
    return -20 * np.log10(max(rel_l2(got, want), 1e-30))


def save(model, directory: Path, name: str) -> str:
    path = str(directory / f"{name}.mlpackage")
    model.save(path)
    return path


def convert_program(prog, target=None, precision: str = "fp32"):
    """ct.convert with no graph passes, so the file holds exactly the ops the test wrote."""
    import coremltools as ct

    return ct.convert(prog, convert_to="mlprogram", pass_pipeline=ct.PassPipeline.EMPTY,
                      minimum_deployment_target=target or ct.target.iOS17,
                      compute_precision=ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16)


def run_file(path: str, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from bridge.validators.runners.coreml_reference import ReferenceRunner

    runner = ReferenceRunner()
    runner.load(path)
    return runner.infer(feed)


def run_cases(cases: dict, inputs: dict[str, np.ndarray], directory: Path, name: str, target=None) -> dict:
    """One program with inputs `inputs` (named x, or x and y) whose outputs are `case(x[, y])` for
    every case, saved to disk and executed from the file; returns outputs by case name."""
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    def outputs(*xs):
        return tuple(mb.identity(x=build(*xs), name=case) for case, build in cases.items())

    def one(x):
        return outputs(x)

    def two(x, y):
        return outputs(x, y)

    assert list(inputs) in (["x"], ["x", "y"]), "inputs are named x, or x and y"
    specs = [mb.TensorSpec(shape=a.shape, dtype=types.numpy_type_to_builtin_type(a.dtype)) for a in inputs.values()]
    prog = mb.program(input_specs=specs, opset_version=target or ct.target.iOS17)(one if len(inputs) == 1 else two)
    return run_file(save(convert_program(prog, target), directory, name), inputs)


def onnx_node(op_type: str, inputs: dict[str, np.ndarray], attrs: dict | None = None,
              initializers: dict[str, np.ndarray] | None = None, opset: int = 19) -> np.ndarray:
    """Run one ONNX node on onnxruntime: an independent implementation of the same math."""
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    init = initializers or {}
    node = helper.make_node(op_type, [*inputs, *init], ["y"], **(attrs or {}))
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
         for n, a in inputs.items()],
        [helper.make_empty_tensor_value_info("y")],
        initializer=[numpy_helper.from_array(v, n) for n, v in init.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(["y"], inputs)[0]


def expected(cases: dict, case: str) -> np.ndarray:
    """The reference value of `cases[case]` (a `(build, reference)` pair), as numpy."""
    want = cases[case][1]()
    return want.numpy() if hasattr(want, "numpy") else np.asarray(want)
