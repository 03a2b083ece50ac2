"""Which files a stage read, for the stage cache: Python's audit hooks (PEP 578) see every `open`.

A Python entrypoint reads what its code decides (its module, the modules it imports, the weights
it loads), so the files cannot be known before it runs. The export stage's child records every
path opened for reading, and every module it imported from outside the interpreter, and hands
back their sha256 as the stage leaves them. The cache keys that stage on their content
(`bridge.cache`), as ccache's depend mode does for a compiler's headers.

Left out: the interpreter and installed packages (their versions are in the key instead), bridge
itself (its code is hashed as a whole), files the stage wrote (its outputs), and files gone by the
end (temporaries). Native code that opens files without Python (h5py, TensorFlow's file system)
is not seen; `bridge.cache` documents what that means.
"""

from __future__ import annotations

import os
import site
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path

_SYSTEM = ("/proc/", "/sys/", "/dev/")
_WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class ReadRecorder:
    """Installed once in a stage child (audit hooks cannot be removed; `files()` ends recording)."""

    def __init__(self) -> None:
        self.read: set[str] = set()
        self.written: set[str] = set()
        self.active = False

    def install(self) -> ReadRecorder:
        sys.addaudithook(self._hook)
        self.active = True
        return self

    def _hook(self, event: str, args: tuple) -> None:
        if event != "open" or not self.active:
            return
        try:  # an exception here would fail the `open` that raised the event
            path, mode, flags = args
            if isinstance(path, int) or path is None:
                return
            name = os.path.abspath(os.fsdecode(path))
            writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & _WRITES)
            (self.written if writes else self.read).add(name)
        except Exception:  # noqa: BLE001, S110 - a path we cannot name is one we cannot key on: nothing to do
            pass

    def files(self) -> tuple[tuple[str, str], ...] | None:
        """(path, sha256) of every file read, sorted; None when one could not be hashed (then the
        stage's result is not cached: a key that misses a file could serve a stale result)."""
        self.active = False
        found = {_source_of(p) for p in self.read} | _imported_sources()
        skip = _installed_roots()
        out = []
        try:
            for name in sorted(found - self.written):
                if name.startswith(_SYSTEM) or any(name == r or name.startswith(r + os.sep) for r in skip):
                    continue
                digest = read_digest(name)
                if digest != ABSENT:  # folders opened to walk them, temporaries already gone
                    out.append((name, digest))
        except OSError:
            return None
        return tuple(out)


ABSENT = "absent"


def read_digest(path: str, content: Callable[[str], str] | None = None) -> str:
    """What a stage got by opening `path`: the content it read and the file that held it (a symlink
    repointed to another file with the same bytes is still the same read; one repointed to other
    bytes is not). The export's cache lookup hashes its recorded paths with this same function,
    with `content` the sha256 of a file's bytes as the run knows it (`bridge.cache.Digests.file`)."""
    from bridge.base.files import sha256

    if not os.path.isfile(path):
        return ABSENT
    real = os.path.realpath(path)
    return f"{content(real) if content is not None else sha256(Path(real))}:{real}"


def _source_of(path: str) -> str:
    """A compiled module stands for its source: the `.pyc` is rewritten whenever Python likes."""
    if path.endswith(".pyc"):
        import importlib.util

        try:
            return importlib.util.source_from_cache(path)
        except ValueError:  # not in a __pycache__ folder: a .pyc someone ships as it is
            return path
    return path


def _imported_sources() -> set[str]:
    """The source file of every imported module (a `.pyc` stands for its `.py`: a changed source
    recompiles, so the source is what decides)."""
    found = set()
    for module in list(sys.modules.values()):
        spec = getattr(module, "__spec__", None)
        origin = getattr(spec, "origin", None) or getattr(module, "__file__", None)
        if isinstance(origin, str) and os.path.isabs(origin):
            found.add(os.path.abspath(origin))
    return found


def _installed_roots() -> list[str]:
    """The interpreter, its standard library, installed packages, and bridge's own code."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    roots.update(p for p in sysconfig.get_paths().values() if p)
    try:
        roots.update(site.getsitepackages())
        roots.add(site.getusersitepackages())
    except AttributeError:  # a virtualenv's old site module
        pass
    for package in ("bridge", "bridge.converters", "bridge.validators"):
        module = sys.modules.get(package)
        roots.update(getattr(module, "__path__", None) or ())
    return sorted(r for r in {os.path.abspath(r) for r in roots if r} if r != os.sep)
