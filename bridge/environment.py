"""Versions of every backend, read from package metadata (nothing is imported)."""

from __future__ import annotations

import platform
from dataclasses import asdict, is_dataclass
from importlib import metadata

from bridge.base.lazy import DEPENDENCIES

PACKAGES = ("bridge-convert", *(d.distribution for d in DEPENDENCIES))


def versions() -> dict[str, str | None]:
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
