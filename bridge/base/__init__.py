"""The leaf package every part of bridge may import, and which imports nothing else of bridge's:
errors, lazy imports, tensor specs and I/O bindings, samples on disk and the sample policy, files,
the mode vocabulary, the lane protocol, and the readers of untrusted model files."""
