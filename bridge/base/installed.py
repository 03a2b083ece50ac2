"""Installed packages' versions, read from the names of their metadata folders, once per process."""

from __future__ import annotations

import functools
import os
import re
import sys
import threading

_ONCE = threading.Lock()


def version(distribution: str) -> str | None:
    """The installed version of `distribution` (None when it is not installed), as
    `importlib.metadata.version` gives it, safe to ask from many threads at once."""
    with _ONCE:
        return _version(distribution)


@functools.cache
def _version(distribution: str) -> str | None:
    found = _by_folder().get(_normalized(distribution))
    if found is not None:
        return found
    from importlib import metadata  # ~13 ms, for this fallback only

    try:  # a package whose folder says nothing (not installed, or an unusual layout)
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


@functools.cache
def _by_folder() -> dict[str, str]:
    """Installed versions from the metadata folders' names (`numpy-2.2.6.dist-info`: the wheel
    spec names them so), the first on sys.path winning as `metadata.version` does. Reading each
    package's METADATA instead parses it as an e-mail (numpy's carries its whole licence): 27 ms
    for bridge's backends in every command, and again for every report."""
    out: dict[str, str] = {}
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for folder in names:
            stem, dot, kind = folder.rpartition(".")
            name, dash, found = stem.partition("-")
            if dot and kind in ("dist-info", "egg-info") and dash and found:
                out.setdefault(_normalized(name), found)
    return out


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()
