"""Dense algebra: linear, matmul, einsum and iOS18 scaled_dot_product_attention.

coremltools' value_inference for each is the plain numpy formula (x @ W.T + b; matmul with the
declared transposes and numpy broadcasting; np.einsum; softmax(QK^T / sqrt(d) + mask) V), so
it is reused. numpy's matmul runs on BLAS, which keeps these fast.
"""

from __future__ import annotations

from .reuse import reuse

reuse("linear", "matmul", "einsum", "scaled_dot_product_attention")
