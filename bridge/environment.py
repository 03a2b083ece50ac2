"""Versions of every backend, read from package metadata (nothing is imported), once per process."""

from __future__ import annotations

import functools
import platform
import threading
from dataclasses import asdict, is_dataclass

from bridge.base.installed import version
from bridge.base.lazy import DEPENDENCIES

PACKAGES = ("bridge-convert", *(d.distribution for d in DEPENDENCIES))


def versions() -> dict[str, str | None]:
    """Every backend's installed version (None: not installed)."""
    return {name: version(name) for name in PACKAGES}


def describe(options) -> dict:
    opts = asdict(options) if is_dataclass(options) else dict(options)
    return {"python": platform.python_version(), "platform": _platform(), "versions": versions(), "options": opts}


_ONCE = threading.Lock()


def _platform() -> str:
    """`platform.platform()`, worked out once per process: it runs `uname -p` in a subprocess, and
    its own cache does not stop the models of a `bridge batch`, each asking from its own thread at
    the same moment, from starting one each."""
    with _ONCE:
        return _worked_out()


@functools.cache
def _worked_out() -> str:
    return platform.platform()
