"""`bridge doctor`"""

from __future__ import annotations

import importlib.util

from bridge.base.lazy import EXTRAS
from bridge.commands.common import say, stdout
from bridge.environment import versions
from bridge.lanes import lanes

# What each kind of source needs, by import name (checked without importing anything). Lanes
# declare their own needs (`Lane.requires`, `Lane.extra`).
SOURCES = {
    "PyTorch sources": ("torch", "onnx", "onnxslim"),
    "Keras / TensorFlow sources": ("tensorflow", "keras", "tf2onnx"),
}


def command() -> None:
    """Versions of every backend and what is missing."""
    say(("backends", "bold"), out=stdout)
    for name, version in versions().items():
        say(f"  {name:16} ", (version, "") if version else ("not installed", "yellow"), out=stdout)
    say(("capabilities", "bold"), out=stdout)
    needs = {**{k: (v, EXTRAS[v[0]]) for k, v in SOURCES.items()},
             **{f"{lane.name} lane": (lane.requires, lane.extra) for lane in lanes().values()}}
    for what, (modules, extra) in needs.items():
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        if missing:
            say(("  ✗ ", "red"), f"{what}: missing {', '.join(missing)}; pip install \"bridge-convert[{extra}]\"",
                out=stdout)
        else:
            say(("  ✓ ", "green"), what, out=stdout)
    say(f"  targets: {', '.join(lanes())}", out=stdout)
