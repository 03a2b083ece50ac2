"""Atomic placement of artifacts, hashes over files and folders, and the debris of killed runs.

Everything the gateway ships is written beside its final path and moved into place complete, so a
killed run leaves the previous artifact or nothing, never half a file. Every temporary entry it
makes in an output folder is named `.<name>.<kind>-<pid>-<random>`; `sweep` removes those whose
process is gone, so killed runs do not pile up hidden work folders.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

_TEMPORARY = re.compile(r"^\..+\.(?:tmp|old|work)-(?P<pid>\d+)-[^/]+$")


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


SETTLED_NS = 20_000_000  # `settled`: twice the coarsest kernel tick
SETTLED_WHOLE_SECONDS_NS = 4_000_000_000  # twice FAT's two seconds
_REMEMBERED: dict[tuple, str] = {}


def sha256_remembered(path: Path) -> str:
    """`sha256(path)`, worked out once per process for a file (or a folder's files) whose inode,
    size and modification time have not moved since and had settled when it was hashed (a write
    within a tick of the filesystem's clock of the one before could keep them): re-running into
    the same `--out` checked each earlier artifact three times (before the run, and twice as it
    published), 0.2 s of a warm batch of four trained models."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    stats = [f.stat() for f in files]
    key = (os.path.abspath(path),
           *((str(f), s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns) for f, s in zip(files, stats, strict=True)))
    found = _REMEMBERED.get(key)
    if found is None:
        found = sha256(path)
        if all(settled(s) for s in stats):
            _REMEMBERED[key] = found
    return found


def settled(st: os.stat_result, last_ns: int | None = None) -> bool:
    """Whether a write to the file from now on would move its times past `last_ns` (its mtime by
    default): filesystems stamp writes from the kernel's coarse clock, a tick of at most 10 ms
    (CONFIG_HZ >= 100), or in whole seconds (FAT, HFS+, ext3), so twice that must have passed."""
    whole = st.st_mtime_ns % 1_000_000_000 == 0
    return time.time_ns() - (last_ns or st.st_mtime_ns) >= (SETTLED_WHOLE_SECONDS_NS if whole else SETTLED_NS)


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
    fd, tmp = tempfile.mkstemp(prefix=_prefix(path.name, "tmp"), dir=path.parent)
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


def open_modes(folder: Path) -> None:
    """Give a folder tree the modes a plain file or folder would get under the umask (0644/0755
    usually): tools that build in a private temporary folder (coremltools' .mlpackage) leave
    owner-only modes that the shipped artifact would keep."""
    mask = _umask()
    for root, _dirs, files in os.walk(folder):
        os.chmod(root, 0o777 & ~mask)
        for name in files:
            full = os.path.join(root, name)
            if not os.path.islink(full):
                os.chmod(full, 0o666 & ~mask)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _prefix(name: str, kind: str) -> str:
    return f".{name}.{kind}-{os.getpid()}-"


def scratch(folder: Path, name: str = "bridge") -> Path:
    """A fresh hidden folder in `folder` (same filesystem, so its files can be `place`d from it)."""
    folder.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=_prefix(name, "work"), dir=folder))


def place(src: Path, dest: Path, hook: Callable[[str], None] | None = None) -> None:
    """Move a finished file or folder from the same filesystem into `dest`, replacing it.

    `os.replace` cannot overwrite a non-empty folder: the old one is moved aside first and deleted
    only once the new one is in place (a run killed in between leaves no `dest`, never a mix).
    """
    hook = hook or (lambda point: None)  # the crash tests' faults (`bridge.stages.Fault`)
    dest.parent.mkdir(parents=True, exist_ok=True)
    hook("place")
    if not dest.is_dir() or dest.is_symlink():
        os.replace(src, dest)
        return
    aside = Path(tempfile.mkdtemp(prefix=_prefix(dest.name, "old"), dir=dest.parent))
    os.replace(dest, aside)  # onto the empty folder just made
    hook("place-swap")
    try:
        os.replace(src, dest)
    except BaseException:
        os.replace(aside, dest)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def sweep(folder: Path) -> list[str]:
    """Remove the temporary entries of runs that no longer exist; returns their names."""
    removed = []
    for entry in folder.iterdir() if folder.is_dir() else ():
        m = _TEMPORARY.match(entry.name)
        if m and not alive(int(m["pid"])):
            try:
                remove(entry)
            except OSError:  # best effort: debris is hidden, and never in a report
                continue
            removed.append(entry.name)
    return sorted(removed)


def alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
