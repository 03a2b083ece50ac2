"""The Core ML lane: hub ONNX -> MIL program (our op converters) -> ML Program .mlpackage files,
one per compression mode. coremltools has no ONNX frontend since 6.0; this is ours."""
