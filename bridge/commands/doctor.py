"""`bridge doctor`"""

from __future__ import annotations

import importlib.util

from bridge.commands.common import stdout
from bridge.converters import LANES
from bridge.environment import versions

# What each capability needs, by import name (checked without importing anything).
NEEDS = {
    "PyTorch sources": ("torch", "onnx", "onnxslim"),
    "Keras / TensorFlow sources": ("tensorflow", "keras", "tf2onnx"),
    "ONNX sources and the hub": ("onnx", "onnxruntime", "onnxslim"),
    "tflite lane": ("onnx2tf", "ai_edge_litert", "flatbuffers"),  # no TensorFlow: onnx2tf 2.x writes the files
    "coreml lane": ("coremltools", "sklearn"),
}
EXTRA = {"PyTorch sources": "torch", "Keras / TensorFlow sources": "keras", "ONNX sources and the hub": "onnx",
         "tflite lane": "tflite", "coreml lane": "coreml"}


def command() -> None:
    """Versions of every backend and what is missing."""
    stdout.print("[bold]backends[/bold]")
    for name, version in versions().items():
        stdout.print(f"  {name:16} {version or '[yellow]not installed[/yellow]'}")
    stdout.print("[bold]capabilities[/bold]")
    for what, modules in NEEDS.items():
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        if missing:
            stdout.print(f"  [red]✗[/red] {what}: missing {', '.join(missing)}; "
                         f"pip install \"bridge-convert[{EXTRA[what]}]\"")
        else:
            stdout.print(f"  [green]✓[/green] {what}")
    stdout.print(f"  targets: {', '.join(LANES)}")
