"""Compressed weights as coremltools writes them, decoded by the reference executor from the saved
file, against coremltools' own decompression (`decompress_weights`) of the in-memory model.

The programs are compressed by coremltools' real passes (not hand-written constexpr ops), so the
files hold what a user's palettized model holds, including the chains coremltools builds: with
`enable_per_channel_scale` the scale is folded into a per-column copy of the look-up table
(`constexpr_blockwise_shift_scale` feeding `constexpr_lut_to_dense`'s lut, pass
`canonicalize_quantized_lut_pattern`), which a decoder that only reads const inputs gets wrong.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.validators.coreml_reference.helpers import rel_l2, save

ct = pytest.importorskip("coremltools")
from coremltools.converters.mil import Builder as mb  # noqa: E402
from coremltools.optimize import coreml as opt  # noqa: E402

RNG = np.random.default_rng(0)
# Heavy-tailed rows and columns, like a trained layer's (an outlier row is what per-channel scales are for).
LINEAR = (RNG.standard_normal((64, 96)) * RNG.lognormal(0, 1, (64, 1)) * RNG.lognormal(0, 0.5, (1, 96))).astype(
    np.float32)
CONV = (RNG.standard_normal((32, 16, 3, 3)) * RNG.lognormal(0, 1, (32, 1, 1, 1))).astype(np.float32)
TABLE = RNG.standard_normal((300, 32)).astype(np.float32)  # an embedding: gather rows by token id


def _model(precision):
    @mb.program(input_specs=[mb.TensorSpec(shape=(2, 96)), mb.TensorSpec(shape=(1, 16, 8, 8)),
                             mb.TensorSpec(shape=(5,), dtype=ct.converters.mil.mil.types.int32)],
                opset_version=ct.target.iOS18)
    def prog(x, image, ids):
        return (mb.linear(x=x, weight=LINEAR, name="dense"), mb.conv(x=image, weight=CONV, name="conv"),
                mb.gather(x=TABLE, indices=ids, axis=0, name="embed"))

    return ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS18, skip_model_load=True,
                      compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32)


def _palettize(**config):
    return lambda m: opt.palettize_weights(m, opt.OptimizationConfig(
        global_config=opt.OpPalettizerConfig(weight_threshold=2048, **config)))


def _int4_blocks(m):
    return opt.linear_quantize_weights(m, opt.OptimizationConfig(global_config=opt.OpLinearQuantizerConfig(
        mode="linear", dtype="int4", granularity="per_block", block_size=16, weight_threshold=2048)))


def _pruned_palettes(m):
    pruned = opt.prune_weights(m, opt.OptimizationConfig(global_config=opt.OpMagnitudePrunerConfig(
        target_sparsity=0.5, weight_threshold=2048)))
    return opt.palettize_weights(pruned, opt.OptimizationConfig(global_config=opt.OpPalettizerConfig(
        nbits=4, weight_threshold=2048)), joint_compression=True)


RECIPES = {
    "lut4_per_tensor": _palettize(nbits=4),
    "lut4_grouped": _palettize(nbits=4, granularity="per_grouped_channel", group_size=4),
    "lut4_grouped_input_axis": _palettize(nbits=4, granularity="per_grouped_channel", group_size=4, channel_axis=1),
    "lut4_grouped_per_channel_scale": _palettize(nbits=4, granularity="per_grouped_channel", group_size=4,
                                                 enable_per_channel_scale=True),
    "lut4_vector": _palettize(nbits=4, cluster_dim=2),
    "lut4_uniform": _palettize(nbits=4, mode="uniform"),
    "int4_blockwise": _int4_blocks,
    "pruned_lut4": _pruned_palettes,
}
ORIGINAL = {"linear": LINEAR, "conv": CONV, "gather": TABLE}  # by the op type that reads the weight
# Worst relative L2 error of a decompressed weight against the original: 4-bit tables and blocks
# keep these within 0.25; a uniform grid spends levels on the tails (0.43 here), 2-element vectors have
# 2 bits per element (0.36), pruning half the weights away is its own error. A wrong decode is ~1.
FIDELITY = {"pruned_lut4": 0.75, "lut4_uniform": 0.5, "lut4_vector": 0.45}


def _weights_by_consumer(program) -> dict[str, str]:
    """The var feeding each weight input of the ops above: consumer op type -> var name (the op names
    change with compute precision, the op types do not)."""
    found = {}
    for op in program.functions["main"].operations:
        if op.op_type in ORIGINAL:
            found[op.op_type] = (op.weight if op.op_type != "gather" else op.x).name
    return found


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_executor_decodes_compressed_weights_as_coremltools_does(recipe, precision, tmp_path):
    from bridge.validators.runners.coreml_reference.executor import Executor
    from bridge.validators.runners.coreml_reference.loader import load_package

    compressed = RECIPES[recipe](_model(precision))
    constexprs = {op.op_type for op in compressed._mil_program.functions["main"].operations  # noqa: SLF001
                  if op.op_type.startswith("constexpr_")}
    assert constexprs, f"{recipe} compressed nothing"
    theirs = opt.decompress_weights(compressed)._mil_program  # noqa: SLF001 - coremltools' own decoder
    dense = {op.outputs[0].name: op.outputs[0].val for op in theirs.functions["main"].operations
             if op.op_type == "const"}
    loaded = load_package(save(compressed, tmp_path, recipe))
    ours = Executor(loaded.program, loaded.function).constants
    mine, reference = _weights_by_consumer(loaded.program), _weights_by_consumer(theirs)
    assert set(mine) == set(ORIGINAL)
    for layer, original in ORIGINAL.items():
        want = np.asarray(dense[reference[layer]], np.float32)
        got = np.asarray(ours[mine[layer]], np.float32)
        np.testing.assert_array_equal(got, want, err_msg=f"{recipe} {layer}")
        assert rel_l2(got, original) < FIDELITY.get(recipe, 0.25), f"{recipe} {layer}: {rel_l2(got, original)}"


def test_per_channel_scale_chain_is_the_one_decoded(tmp_path):
    """The chain the test above must cover: coremltools folds the scale into the table."""
    compressed = RECIPES["lut4_grouped_per_channel_scale"](_model("fp16"))
    ops = {op.name: op for op in compressed._mil_program.functions["main"].operations}  # noqa: SLF001
    weight = next(op for op in ops.values() if op.op_type == "linear").weight.op
    assert weight.op_type == "constexpr_lut_to_dense"
    assert weight.lut.op.op_type == "constexpr_blockwise_shift_scale"
