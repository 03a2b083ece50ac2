"""Weight decompression ops (iOS16 and iOS18 forms), evaluated once when the program loads.

Each uses coremltools' own `decompress` through the op class's `materialized_val_inference`: the
class is the one for the file's opset, so packed iOS16 palettes (uint8 bytes holding n-bit
indices) and iOS18 ones (uintN indices, per-block LUTs, vector palettes) each decode by their own
definition. The result is rounded to the op's declared dtype like every other op output.
"""

from __future__ import annotations

from .reuse import reuse

reuse("constexpr_affine_dequantize", "constexpr_lut_to_dense", "constexpr_sparse_to_dense", "constexpr_cast",
      "constexpr_blockwise_shift_scale", "constexpr_lut_to_sparse", "constexpr_sparse_blockwise_shift_scale",
      method="materialized_val_inference")
