"""The TFLite lane: hub ONNX -> onnx2tf -> one TFLite converter pass per mode."""
