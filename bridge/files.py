"""Atomic placement of artifacts and hashes over files and folders.

Everything the gateway ships is written beside its final path and moved into place complete, so a
killed run leaves the previous artifact or nothing, never half a file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path


def sha256(path: Path) -> str:
    """Of a file's bytes; of a folder, over its files' relative paths and bytes in sorted order."""
    h = hashlib.sha256()
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(f.relative_to(path).as_posix().encode() + b"\0")
            _update(h, f)
    else:
        _update(h, path)
    return h.hexdigest()


def _update(h, f: Path) -> None:
    with f.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)


def size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a report is for everyone to read
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def place(src: Path, dest: Path) -> None:
    """Move a finished file or folder from the same filesystem into `dest`, replacing it.

    `os.replace` cannot overwrite a non-empty folder: the old one is moved aside first and deleted
    only once the new one is in place.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.is_dir() or dest.is_symlink():
        os.replace(src, dest)
        return
    aside = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    os.replace(dest, aside)
    try:
        os.replace(src, dest)
    except BaseException:
        os.replace(aside, dest)
        raise
    shutil.rmtree(aside, ignore_errors=True)
