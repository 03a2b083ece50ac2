"""How the reference executor treats a program as a whole: refusal before anything runs, fp16
rounding per op, input casting, weight decompression by the MIL spec's own examples, and an op
registry that agrees with coremltools' op definitions."""

from __future__ import annotations

import inspect
import subprocess
import sys

import numpy as np
import pytest

from bridge.base.errors import RuntimeUnavailable, UsageError
from tests.validators.coreml_reference.helpers import convert_program, run_file, save

ct = pytest.importorskip("coremltools")
from coremltools.converters.mil import Builder as mb  # noqa: E402
from coremltools.converters.mil.mil import types  # noqa: E402


def runner_for(prog, tmp_path, name: str, target=None):
    from bridge.validators.runners.coreml_reference import ReferenceRunner

    runner = ReferenceRunner()
    runner.load(save(convert_program(prog, target), tmp_path, name))
    return runner


def test_unsupported_ops_are_refused_at_load_all_named(tmp_path):
    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4, 8))], opset_version=ct.target.iOS17)
    def prog(x):
        x = mb.relu(x=x, name="first")
        windows = mb.sliding_windows(x=x, axis=2, size=3, name="windows")
        noise = mb.random_normal(shape=np.array([1, 4, 6, 3], np.int32), name="noise")
        return mb.add(x=windows, y=noise, name="y")

    with pytest.raises(RuntimeUnavailable) as info:
        runner_for(prog, tmp_path, "unsupported")  # load() raises: nothing was executed
    assert str(info.value) == ("op sliding_windows (name windows) unsupported by the reference executor; "
                               "op random_normal (name noise) unsupported by the reference executor")


def test_control_flow_is_refused(tmp_path):
    @mb.program(input_specs=[mb.TensorSpec(shape=(2,))], opset_version=ct.target.iOS17)
    def prog(x):
        pred = mb.greater(x=mb.reduce_sum(x=x), y=0.0)
        return mb.cond(pred=pred, _true_fn=lambda: mb.relu(x=x), _false_fn=lambda: mb.sigmoid(x=x), name="branch")

    with pytest.raises(RuntimeUnavailable, match=r"op cond \(name branch\) unsupported by the reference executor"):
        runner_for(prog, tmp_path, "cond")


def test_fp16_programs_round_every_op_output(tmp_path):
    """Each op computes in fp32 and stores fp16, as the device does: (x + 1) - 1 loses x = 2^-12."""

    @mb.program(input_specs=[mb.TensorSpec(shape=(4,), dtype=types.fp16)], opset_version=ct.target.iOS16)
    def prog(x):
        lost = mb.sub(x=mb.add(x=x, y=np.float16(1)), y=np.float16(1), name="lost")
        chain = mb.sub(x=mb.mul(x=mb.exp(x=x), y=np.float16(3)), y=x, name="chain")
        return lost, chain

    x = np.array([2.0**-12, 0.1, -1.7, 3.3], np.float16)
    out = runner_for(prog, tmp_path, "fp16", ct.target.iOS16).infer({"x": x})
    f16 = np.float16
    assert out["lost"].dtype == np.float16
    assert out["lost"][0] == 0  # fp32 end to end would keep 2^-12
    want = (f16(f16(np.exp(x.astype(np.float32))) * f16(3)).astype(np.float32) - x).astype(f16)
    assert np.array_equal(out["chain"], want)


def test_fp16_rounding_on_bits_equals_numpy_casts():
    """Every float16 value, every midpoint between neighbours (ties go to even), the float32 values
    next to those midpoints, subnormals, overflow to inf, signed zeros, inf and NaN."""
    from bridge.validators.runners.coreml_reference.precision import round_to_fp16

    halves = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    finite = np.sort(halves[np.isfinite(halves)].astype(np.float64))
    mids = ((finite[1:] + finite[:-1]) / 2).astype(np.float32)
    scales = np.float32(10.0) ** np.arange(-9, 6, dtype=np.float32).repeat(1000)  # 1e-9 .. 1e5
    noise = np.random.default_rng(0).standard_normal(scales.size).astype(np.float32) * scales
    probes = np.concatenate([halves.astype(np.float32), mids, np.nextafter(mids, np.float32(np.inf)),
                             np.nextafter(mids, np.float32(-np.inf)), np.float32([65519.99, 65520, 1e9, -1e-30]),
                             noise])
    with np.errstate(over="ignore"):
        want = probes.astype(np.float16).astype(np.float32)
    got = round_to_fp16(probes)
    assert np.array_equal(got.view(np.uint32)[~np.isnan(want)], want.view(np.uint32)[~np.isnan(want)])
    assert np.isnan(got[np.isnan(want)]).all()


def test_fp16_rounding_equals_numpy_casts_for_every_significand():
    """The rounding works on significands (binary scaling commutes with it): every float32
    significand, at the bottom of float16's normal range, at 1 and at its top binade."""
    from bridge.validators.runners.coreml_reference.precision import round_to_fp16

    significands = np.arange(2**23, dtype=np.uint32) | np.uint32(127 << 23)  # [1, 2)
    for scale in (2.0**-14, 1.0, -(2.0**15)):
        probes = significands.view(np.float32) * np.float32(scale)
        with np.errstate(over="ignore"):
            want = probes.astype(np.float16).astype(np.float32)
        assert np.array_equal(round_to_fp16(probes).view(np.uint32), want.view(np.uint32)), scale


def test_fp16_programs_hold_only_fp16_values(tmp_path, monkeypatch):
    """Ops that only copy input values (clip, relu6, max_pool, transpose, reshape, concat, ...) are
    not rounded again, so the check is on every value the program holds after every op; `y` is an
    output that later ops also read."""
    from bridge.validators.runners.coreml_reference import executor
    from bridge.validators.runners.coreml_reference.precision import round_to_fp16

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4, 6, 6), dtype=types.fp16)], opset_version=ct.target.iOS17)
    def prog(x):
        y = mb.mul(x=x, y=np.float16(1.1), name="y")
        kept = mb.maximum(x=mb.clip(x=y, alpha=np.float16(-0.3), beta=np.float16(0.7)), y=mb.relu(x=y))
        pooled = mb.max_pool(x=kept, kernel_sizes=[2, 2], strides=[2, 2], pad_type="same")
        flat = mb.reshape(x=mb.transpose(x=pooled, perm=[0, 2, 3, 1]), shape=[1, -1])
        peaks = mb.reduce_max(x=mb.relu6(x=mb.mul(x=y, y=np.float16(3))), axes=[2, 3], keep_dims=False)
        return y, mb.mul(x=mb.concat(values=[flat, peaks], axis=1), y=np.float16(0.3), name="out")

    held = []
    run = executor.Step.run

    def recording(step, env):
        run(step, env)
        held.extend((step.op.name, env[name]) for name, _, _ in step.outputs)

    monkeypatch.setattr(executor.Step, "run", recording)
    x = np.random.default_rng(0).standard_normal((1, 4, 6, 6)).astype(np.float16)
    out = runner_for(prog, tmp_path, "fp16_held").infer({"x": x})
    for name, value in held:
        assert value.dtype == np.float32 and np.array_equal(value, round_to_fp16(value)), name
    y = x * np.float16(1.1)
    kept = np.maximum(np.clip(y, np.float16(-0.3), np.float16(0.7)), np.maximum(y, 0))
    flat = kept.reshape(1, 4, 3, 2, 3, 2).max(axis=(3, 5)).transpose(0, 2, 3, 1).reshape(1, -1)
    peaks = np.clip(y * np.float16(3), 0, 6).max(axis=(2, 3))
    assert np.array_equal(out["y"], y)
    assert np.array_equal(out["out"], np.concatenate([flat, peaks], axis=1) * np.float16(0.3))


def test_inputs_are_cast_to_declared_dtypes(tmp_path):
    @mb.program(input_specs=[mb.TensorSpec(shape=(2, 3)), mb.TensorSpec(shape=(2,), dtype=types.int32)],
                opset_version=ct.target.iOS17)
    def prog(x, idx):
        return mb.gather(x=x, indices=idx, axis=1, name="y")

    runner = runner_for(prog, tmp_path, "cast")
    x = np.arange(6, dtype=np.float64).reshape(2, 3)
    out = runner.infer({"x": x, "idx": np.array([2, -3], np.int64)})
    assert out["y"].dtype == np.float32
    assert np.array_equal(out["y"], x[:, [2, 0]])
    with pytest.raises(UsageError, match="missing input 'idx'"):
        runner.infer({"x": x})
    with pytest.raises(UsageError, match="has shape"):
        runner.infer({"x": x.T, "idx": np.array([0, 1])})


def test_decompression_follows_the_mil_spec_examples(tmp_path):
    """The bit-packing examples of the iOS16 constexpr docstrings, decoded by hand."""

    @mb.program(input_specs=[mb.TensorSpec(shape=(5,))], opset_version=ct.target.iOS16)
    def prog(x):
        lut = mb.constexpr_lut_to_dense(indices=np.array([0b01101100, 0b00000011], np.uint8),
                                        lut=np.array([10, 20, 30, 40], np.float32),
                                        shape=np.array([5], np.uint32))
        sparse = mb.constexpr_sparse_to_dense(nonzero_data=np.array([7, 9], np.float32),
                                              mask=np.array([0b00001100], np.uint8), shape=np.array([5], np.uint32))
        affine = mb.constexpr_affine_dequantize(quantized_data=np.array([-3, 5, 0, 127, -128], np.int8),
                                                zero_point=np.int8(1), scale=np.float32(0.5), axis=0)
        return (mb.add(x=x, y=lut, name="lut"), mb.add(x=x, y=sparse, name="sparse"),
                mb.add(x=x, y=affine, name="affine"))

    out = run_file(save(convert_program(prog, ct.target.iOS16), tmp_path, "constexpr"), {"x": np.zeros(5)})
    assert out["lut"].tolist() == [10, 40, 30, 20, 40]  # indices i0..i4 = 0, 3, 2, 1, 3
    assert out["sparse"].tolist() == [0, 0, 7, 9, 0]
    assert out["affine"].tolist() == [-2, 2, -0.5, 63, -64.5]


def test_weights_are_decompressed_once_at_load(tmp_path, monkeypatch):
    """constexpr_* ops run when the package loads; inferences only read their results."""
    from bridge.validators.runners.coreml_reference.ops import reuse

    @mb.program(input_specs=[mb.TensorSpec(shape=(2, 4))], opset_version=ct.target.iOS16)
    def prog(x):
        weight = mb.constexpr_affine_dequantize(quantized_data=np.arange(-6, 6, dtype=np.int8).reshape(3, 4),
                                                zero_point=np.int8(1), scale=np.float32(0.5), axis=0)
        palette = mb.constexpr_lut_to_dense(indices=np.array([0b11100100], np.uint8),
                                            lut=np.array([1, 2, 3, 4], np.float32), shape=np.array([4], np.uint32))
        return mb.linear(x=mb.mul(x=x, y=palette), weight=weight, name="y")

    runner = runner_for(prog, tmp_path, "decompress_once", ct.target.iOS16)
    evaluated = []
    evaluate = reuse.evaluate

    def counting(mil_op, values, method="value_inference"):
        evaluated.append(mil_op.op_type)
        return evaluate(mil_op, values, method)

    monkeypatch.setattr(reuse, "evaluate", counting)
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    for _ in range(2):
        out = runner.infer({"x": x})
    assert "linear" in evaluated  # coremltools' linear still runs at each inference; no decompression does
    assert not [op_type for op_type in evaluated if op_type.startswith("constexpr_")]
    weight = (np.arange(-6, 6, dtype=np.float32).reshape(3, 4) - 1) * 0.5
    np.testing.assert_allclose(out["y"], (x * [1, 2, 3, 4]) @ weight.T, rtol=1e-6)


def test_neural_network_models_are_refused(tmp_path):
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    builder = NeuralNetworkBuilder([("x", datatypes.Array(3))], [("y", datatypes.Array(3))])
    builder.add_activation("relu", "RELU", "x", "y")
    path = tmp_path / "nn.mlmodel"
    ct.models.MLModel(builder.spec, skip_model_load=True).save(str(path))
    with pytest.raises(RuntimeUnavailable, match="ML Programs only"):
        run_file(str(path), {"x": np.zeros(3)})


def test_registry_matches_coremltools_op_definitions():
    """Every registered name is a MIL op; every written-out implementation takes exactly the
    inputs coremltools defines for that op (in some opset), and accepts all of them."""
    from coremltools.converters.mil.mil.ops.registry import SSAOpRegistry

    from bridge.validators.runners.coreml_reference.ops import load_families

    for name, fn in load_families().items():
        versions = SSAOpRegistry.core_ops.get(name)
        assert versions, f"{name} is not a MIL op"
        if fn.__name__.startswith("coremltools_"):
            continue
        params = set(inspect.signature(fn).parameters) - {"mil_op"}
        defined = [set(cls.input_spec.input_types) for cls in versions.values()]
        assert params <= set().union(*defined), (name, params - set().union(*defined))
        for inputs in defined:
            assert inputs <= params, (name, inputs - params)


def test_importing_the_runner_loads_no_framework():
    code = ("import sys, bridge.validators.runners.coreml_reference as r; "
            "print(sorted(m for m in ('coremltools', 'torch', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
