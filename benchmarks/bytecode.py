"""Byte-compile bridge's own modules before a benchmark times anything.

pip byte-compiles a package when it installs it, so every tool the benchmarks compare bridge with
(onnx2tf, torch, onnxruntime) starts from `.pyc` files. An editable install (`pip install -e .`, the
README's) leaves bridge's source folders to be compiled on first import, and where the environment
sets PYTHONDONTWRITEBYTECODE=1 (this machine's shell does) nothing is ever written, so every bridge
process, the gateway and each stage child, compiled bridge from source again: 0.1-0.2 s each,
which a user's installed bridge never pays.
"""

from __future__ import annotations

import compileall
import json
import subprocess
from pathlib import Path


def compile_bridge(python: str | Path) -> list[str]:
    """Compile the bridge package that `python` imports (in its own environment); returns its folders."""
    code = ("import importlib.util, json; print(json.dumps([p for n in ('bridge', 'bridge.converters', "
            "'bridge.validators') for p in importlib.util.find_spec(n).submodule_search_locations]))")
    folders = json.loads(subprocess.run([str(python), "-c", code], capture_output=True, text=True,
                                        check=True).stdout)
    for folder in folders:
        compileall.compile_dir(folder, quiet=1)
    return folders


if __name__ == "__main__":  # python benchmarks/bytecode.py [PYTHON]
    import sys

    print("\n".join(compile_bridge(sys.argv[1] if len(sys.argv) > 1 else sys.executable)))
