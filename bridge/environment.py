"""Versions of every backend, read from package metadata (nothing is imported), once per process."""

from __future__ import annotations

import functools
import os
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
    """`platform.platform()`, worked out once per process, and on Linux without the `uname -p`
    subprocess it runs for a field its Linux string leaves out when `uname -p` says what the
    machine is or "unknown" (a fork and exec: 3-6 ms of a warm `bridge batch`). Its own cache does
    not stop the models of a `bridge batch`, each asking from its own thread at the same moment,
    from starting one each."""
    with _ONCE:
        return _worked_out()


@functools.cache
def _worked_out() -> str:
    u = os.uname()
    if u.sysname != "Linux":
        return platform.platform()
    libc, version = platform.libc_ver()  # what platform.platform() appends on Linux
    return "-".join(p for p in (u.sysname, u.release, u.machine, "with", f"{libc}{version}") if p)
