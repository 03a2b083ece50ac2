"""Versions of every backend, read from package metadata (nothing is imported), once per process."""

from __future__ import annotations

import functools
import os
import platform
import re
import sys
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
    named = _versions_by_folder()
    out = {}
    for name in PACKAGES:
        if _normalized(name) in named:
            out[name] = named[_normalized(name)]
            continue
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _versions_by_folder() -> dict[str, str]:
    """Installed versions from the metadata folders' names (`numpy-2.2.6.dist-info`: the wheel
    spec names them so), the first on sys.path winning as `metadata.version` does. Reading each
    package's METADATA instead parses it as an e-mail (numpy's carries its whole licence): 27 ms
    for the list, in every `bridge` command. A package whose folder says nothing is read the slow way."""
    out: dict[str, str] = {}
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for folder in names:
            stem, dot, kind = folder.rpartition(".")
            name, dash, version = stem.partition("-")
            if dot and kind in ("dist-info", "egg-info") and dash and version:
                out.setdefault(_normalized(name), version)
    return out


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def describe(options) -> dict:
    opts = asdict(options) if is_dataclass(options) else dict(options)
    return {"python": platform.python_version(), "platform": platform.platform(), "versions": versions(),
            "options": opts}
