"""Target lanes, one package each (onnx: the hub, tflite, coreml), each declaring a `Lane` in its
`__init__` and registered through the `bridge.lanes` entry-point group (pyproject.toml). Nothing
here imports a framework: converters import theirs inside the stage children that run them."""
