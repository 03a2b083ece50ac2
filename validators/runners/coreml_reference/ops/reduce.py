"""Reductions. coremltools' value_inference applies the numpy reduction over `axes` with
`keep_dims` (reduce_*), or argmax/argmin over `axis` (reduce_arg*), which is MIL's definition:
reused. First occurrence wins ties in argmax/argmin, as in numpy."""

from __future__ import annotations

from .reuse import reuse

reuse("reduce_max", "reduce_min", copies_values=True)
reuse("reduce_sum", "reduce_mean", "reduce_prod", "reduce_l1_norm", "reduce_l2_norm",
      "reduce_log_sum", "reduce_log_sum_exp", "reduce_sum_square", "reduce_argmax", "reduce_argmin")
