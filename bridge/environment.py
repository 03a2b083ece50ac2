"""Versions of every backend, read from package metadata (nothing is imported), once per process."""

from __future__ import annotations

import functools
import platform
import threading
from dataclasses import asdict, is_dataclass
from importlib import metadata

from bridge.base.lazy import DEPENDENCIES

PACKAGES = ("bridge-convert", *(d.distribution for d in DEPENDENCIES))


_ONCE = threading.Lock()


def versions() -> dict[str, str | None]:
    """Read once per process: each read searches every folder on sys.path (~25 ms for the list),
    and `bridge batch` describes every model's environment from its own thread."""
    with _ONCE:
        return dict(_read_versions())


@functools.cache
def _read_versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def describe(options) -> dict:
    opts = asdict(options) if is_dataclass(options) else dict(options)
    return {"python": platform.python_version(), "platform": platform.platform(), "versions": versions(),
            "options": opts}
