"""Versions of every backend, read from package metadata (nothing is imported), once per process."""

from __future__ import annotations

import platform
from dataclasses import asdict, is_dataclass

from bridge.base.installed import version
from bridge.base.lazy import DEPENDENCIES

PACKAGES = ("bridge-convert", *(d.distribution for d in DEPENDENCIES))


def versions() -> dict[str, str | None]:
    """Every backend's installed version (None: not installed)."""
    return {name: version(name) for name in PACKAGES}


def describe(options) -> dict:
    opts = asdict(options) if is_dataclass(options) else dict(options)
    return {"python": platform.python_version(), "platform": platform.platform(), "versions": versions(),
            "options": opts}
