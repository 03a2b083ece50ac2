"""The ONNX hub: every source is exported here once, then lowered to each target lane."""
