"""iOS17 activation quantization: quantize and dequantize, as coremltools' optimize utilities
compute them (round half to even, add the zero point, clip to the integer range; subtract the
zero point, multiply by the scale), broadcast per tensor or along `axis`."""

from __future__ import annotations

from .reuse import reuse

reuse("quantize")
reuse("dequantize", method="materialized_val_inference")
