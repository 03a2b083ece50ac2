"""`palettize-4`'s recipe per deployment target, on a program with one weight of each kind the recipe
tells apart (a fully connected layer, a convolution, an embedding table), compressed by coremltools
for real and read back from the saved package."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.converters.coreml import compress as cm

ct = pytest.importorskip("coremltools")
from coremltools.converters.mil import Builder as mb  # noqa: E402
from coremltools.converters.mil.mil import types  # noqa: E402

RNG = np.random.default_rng(0)
DENSE = RNG.standard_normal((64, 96)).astype(np.float32)
KERNEL = RNG.standard_normal((32, 16, 3, 3)).astype(np.float32)
TABLE = RNG.standard_normal((301, 32)).astype(np.float32)  # 301 rows: no group size divides them


def _compressed(target: str, tmp_path):
    from bridge.validators.runners.coreml_reference.loader import load_package

    opset = getattr(ct.target, target)

    @mb.program(input_specs=[mb.TensorSpec(shape=(2, 96)), mb.TensorSpec(shape=(1, 16, 8, 8)),
                             mb.TensorSpec(shape=(5,), dtype=types.int32)], opset_version=opset)
    def prog(x, image, ids):
        return (mb.linear(x=x, weight=DENSE, name="dense"), mb.conv(x=image, weight=KERNEL, name="conv"),
                mb.gather(x=TABLE, indices=ids, axis=0, name="embed"))

    model = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=opset, skip_model_load=True)
    model = cm.compress(model, "palettize-4", target)
    model.save(str(tmp_path / "m.mlpackage"))
    program = load_package(str(tmp_path / "m.mlpackage")).program
    weight = {}
    for op in program.functions["main"].operations:
        if op.op_type in ("linear", "conv", "gather"):
            weight[op.op_type] = (op.weight if op.op_type != "gather" else op.x).op
    return program, weight


def test_from_ios18_tables_are_grouped_and_fully_connected_weights_stay_int8(tmp_path):
    program, weight = _compressed("iOS18", tmp_path)
    dense, conv, embed = weight["linear"], weight["conv"], weight["gather"]
    assert dense.op_type == "constexpr_blockwise_shift_scale" and dense.data.dtype == types.int8
    assert dense.scale.shape == (64, 1)  # one scale per output channel
    assert conv.op_type == "constexpr_lut_to_dense" and conv.lut.shape == (32 // cm.GROUP_SIZE, 1, 1, 1, 16, 1)
    assert embed.op_type == "constexpr_lut_to_dense" and embed.lut.shape == (1, 1, 16, 1)  # one table
    assert cm.int8_weights(program) == [dense.outputs[0].name]
    assert cm.int8_ops("palettize-4", "iOS18") == ("linear",)


def test_before_ios18_every_weight_gets_one_4bit_table(tmp_path):
    program, weight = _compressed("iOS17", tmp_path)
    for op in weight.values():
        assert op.op_type == "constexpr_lut_to_dense" and op.lut.shape == (16,)  # iOS16's form: one table
    assert cm.int8_weights(program) == [] and cm.int8_ops("palettize-4", "iOS17") == ()
