"""The stage cache: a stage whose inputs are unchanged is not run again; its files are copied back.

A stage's key is the sha256 of everything its result depends on:
- the stage (its name and "module:function") and its options, as data;
- bridge's own code, by content (every file of the installed `bridge`, `bridge.converters` and
  `bridge.validators`: an editable install keeps version 0.1.0 while its code changes);
- the installed version of every backend, Python's version and the machine's architecture;
- the content of every file it reads. For the export that is the source (a model file, a folder),
  the calibration and parity data, and for a Python entrypoint every file the export actually
  opened: its module, the modules it imported from outside the installed packages, the weights it
  loaded. Those are only known once it has run, so the export is keyed in two steps, as ccache's
  depend mode does: the key of what is known up front names the file lists earlier runs read
  (`deps/`), and each list, hashed again now, gives a full key. Every later stage reads the hub
  and the sample folders by content hash, so a re-run whose export changed nothing still reuses
  the lanes.

An entry holds the stage's result (pickled), the files it made (relative to the folder it made them
in), and a manifest with the sha256 of each. An entry is checked against its manifest as it is
linked out; one that does not match is deleted and the stage runs. A file is checked by hashing it,
or, once it has been found to match, by its inode, size and modification time, as git and bazel know
an unchanged file (`bridge.base.files.settled` says when its times can be trusted). Entries are
written to a temporary folder and renamed into place (a rename is atomic, and a concurrent writer of
the same key loses harmlessly), so readers need no lock. Only trimming the cache to its size bound
takes one (`filelock`: a lock file is fine inside the cache folder, and it handles the stale-lock
and timeout cases that a hand-rolled `fcntl` loop would have to).

Results are pickles, and compiled page templates are Python code; the folder must be the user's own
and writable by no one else (checked), since anyone who can write it can make bridge unpickle or
run what they like. Errors a stage raises itself are
cached too (the same inputs fail the same way); crashes, time-outs and memory exhaustion are not.

What the report pages are made of is kept here too (`Pages`): each figure as an SVG keyed by what
it plots, the matplotlib version and bridge's code (`figures/`), and the page templates compiled
(`templates/`, jinja2's own bytecode cache, checked against each template's source), so a warm
run's pages are written without drawing, importing matplotlib or compiling a template. Verdicts
(parity judgements, metrics, the noise floor) are kept as entries without files, keyed by the
arrays' contents and the thresholds they were judged with (`bridge.conversion`).

Not seen: files that native code opens without Python's `open` (h5py's `.h5` weights, TensorFlow's
file system). An entrypoint that loads weights that way must be run with `--no-cache` after they
change (the README says so).
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import hashlib
import json
import os
import pickle
import platform
import shutil
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from bridge.base.errors import UsageError
from bridge.base.files import settled as files_settled
from bridge.base.files import sha256
from bridge.stages import Outcome, Stage

SCHEMA = "bridge.stage-cache/1"
DEFAULT_MAX_BYTES = 20 << 30
MAX_VARIANTS = 8  # file lists remembered per export pre-key
TRIM_TO = 0.8  # a trim leaves the cache at this fraction of its bound
# A process trims when it first stores, then each time it has stored this fraction of the bound since
# its last trim: a trim reads every entry's manifest (0.2-0.3 s at 3,000 entries), and trimming after
# every store made a cold batch's cost grow with the cache's size. A cache may so pass its bound by
# this slice per process writing to it, until that process's next trim.
TRIM_EVERY = 0.05
MANIFEST = "manifest.json"
RESULT = "result.pickle"
# An entry's file whose inode, size and modification time are those it had when its bytes were last
# found to match the manifest is taken as unchanged without reading it. Writing to a file, through
# any of its links, moves its modification time, unless the write comes within one tick of the
# filesystem's clock of the write that set it: a file checked before its times settled
# (`bridge.base.files.settled`) is not trusted by them (a later check records them).
VERIFIED = "verified.json"  # {path: [inode, bytes, mtime_ns]} learned by gets, for files stored unsettled


def default_dir() -> Path:
    """The user's cache folder (XDG), as pip and torch use it."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bridge" / "stages"


@functools.cache
def code_digest() -> str:
    """sha256 over bridge's installed files (relative path and bytes), caches excluded."""
    import importlib.util

    folders = []
    for package in ("bridge", "bridge.converters", "bridge.validators"):
        spec = importlib.util.find_spec(package)
        folders += [(package, folder) for folder in sorted(spec.submodule_search_locations or ())]
    return tree_digest(folders)


def tree_digest(folders: list[tuple[str, str]]) -> str:
    """sha256 over every file under each (label, folder): its label, relative path and bytes, byte
    code (`__pycache__`, .pyc) left out. Walked with os.walk and plain reads: pathlib's rglob and
    Path objects took 20 ms of every command for bridge's ~150 files (their bytes hash in 2)."""
    h = hashlib.sha256()
    for label, folder in folders:
        for path in sorted(_code_files(folder)):
            h.update(f"{label}/{path.replace(os.sep, '/')}\0".encode())
            with open(os.path.join(folder, path), "rb") as f:
                h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def _code_files(folder: str) -> Iterator[str]:
    """Every regular file under `folder` (relative paths), byte code left out."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if not name.endswith((".pyc", ".pyo")) and os.path.isfile(os.path.join(root, name)):
                yield os.path.relpath(os.path.join(root, name), folder)


_ONCE = threading.Lock()


def environment_digest() -> dict:
    """Backend versions (the executor's Ray excluded: it moves work, it does not compute), Python
    and the architecture; computed once per process, however many threads ask at once."""
    with _ONCE:
        return _environment_digest()


@functools.cache
def _environment_digest() -> dict:
    from bridge.base.lazy import DEPENDENCIES
    from bridge.environment import versions

    executors = {d.distribution for d in DEPENDENCIES if d.extra == "ray"}
    return {"versions": {k: v for k, v in versions().items() if k not in executors},
            "python": platform.python_version(), "machine": platform.machine(), "system": platform.system(),
            "code": code_digest()}


def canonical(value: Any) -> Any:
    """Data for the key: dataclasses by type and fields, enums by value, sets sorted, floats by repr."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"__type__": type(value).__qualname__,
                **{f.name: canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    if isinstance(value, enum.Enum):
        return canonical(value.value)
    if isinstance(value, Mapping):
        return {str(k): canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (set, frozenset)):
        return sorted((canonical(v) for v in value), key=repr)
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, float):
        return repr(value)
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return repr(value)


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(canonical(value), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@functools.cache
def package_digest(function: str) -> str:
    """A plug-in's code by content: the files of the top-level package of a "module:function"."""
    import importlib.util

    top = function.split(":")[0].split(".")[0]
    spec = importlib.util.find_spec(top)
    h = hashlib.sha256()
    folders = spec.submodule_search_locations if spec and spec.submodule_search_locations else None
    files = [Path(spec.origin)] if spec and spec.origin and not folders else []
    for folder in folders or ():
        files += sorted(f for f in Path(folder).rglob("*.py") if "__pycache__" not in f.parts)
    for f in files:
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


class Digests:
    """Content hashes of files and folders, computed once per path (one run's work files never
    change once made). A file's is its sha256; a folder's, the sha256 of its files' relative
    paths and sha256s, so a folder restored from the cache is known from the entry's manifest."""

    def __init__(self, files: KnownFiles | None = None) -> None:
        self._known: dict[str, str] = {}
        self._inodes: dict[tuple[int, int], tuple[int, int, str]] = {}  # (dev, ino) -> (size, mtime_ns, sha256)
        self.files = files  # the user's files' sha256s kept between runs, when there is a cache

    def of(self, path: str | Path | None, *, user: bool = False) -> str | None:
        """Symlinks are never followed: a link is known by its target's name (reading through it
        could read outside the folder the user named, which bridge never does). `user`: a file or
        folder of the user's (a source, calibration samples), whose files' sha256s are kept
        between runs (`KnownFiles`); never a run's own files, whose paths are new each run."""
        if path is None:
            return None
        key = os.path.abspath(path)
        if key not in self._known:
            try:
                st = os.lstat(key)
            except OSError:
                self._known[key] = "absent"
                return "absent"
            if stat.S_ISLNK(st.st_mode):
                value = "link:" + os.readlink(key)
            elif stat.S_ISDIR(st.st_mode):
                lines = []
                for folder, dirs, files in os.walk(key):  # does not descend into linked folders
                    dirs.sort()
                    for name in sorted(files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]):
                        full = os.path.join(folder, name)
                        lines.append(f"{os.path.relpath(full, key)}\0{self.of(full, user=user)}\n")
                value = hashlib.sha256("".join(sorted(lines)).encode()).hexdigest()
            elif stat.S_ISREG(st.st_mode):
                value = self.file(key) if user else sha256(Path(key))
            else:  # a FIFO or a device is never opened
                value = f"special:{stat.S_IFMT(st.st_mode)}"
            self._known[key] = value
        return self._known[key]

    def file(self, path: str | Path) -> str:
        """The sha256 of a user's regular file's bytes (through a symlink, the file behind it), read
        once per run, and between runs only when it changed (`KnownFiles`)."""
        key = os.path.realpath(path)
        value = self._known.get(key)
        if value is None or value.startswith(("link:", "special:", "absent")):
            value = self.files.sha256(key) if self.files is not None else sha256(Path(key))
            self._known[key] = value
        return value

    def learn(self, path: str | Path, value: str) -> None:
        self._known[os.path.abspath(path)] = value
        with contextlib.suppress(OSError):
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                self._inodes[st.st_dev, st.st_ino] = (st.st_size, st.st_mtime_ns, value)

    def known(self, path: str | Path) -> str | None:
        """The digest already known for `path` (hashed or learned from an entry's manifest), or for
        another link to the same file, unchanged since (a run's files are not written in place);
        None: never reads the file."""
        found = self._known.get(os.path.abspath(path))
        if found is None:
            with contextlib.suppress(OSError):
                st = os.lstat(path)
                size, mtime, value = self._inodes.get((st.st_dev, st.st_ino), (-1, -1, None))
                if stat.S_ISREG(st.st_mode) and (size, mtime) == (st.st_size, st.st_mtime_ns):
                    found = value
        return found


class KnownFiles:
    """The sha256s of the user's files (sources, calibration samples, what an entrypoint read),
    kept between runs with each file's identity: its device, inode, size, and modification and
    change times. A file whose identity is the one recorded is not read again (a warm run of four
    trained models read 0.4 GB of sources and calibration images to find them unchanged). Any write
    moves the change time, which no tool can set back (a copy that keeps times, `cp -p`, and
    `touch -d` move it too); a file replaced by another is another inode. Recorded only for files
    of `FROM` bytes or more (smaller ones hash as fast as a record is read) whose times have
    settled (`bridge.base.files.settled`). One small JSON file per path under `files/`, written
    atomically; trimmed with the entries."""

    FROM = 256 << 10

    def __init__(self, root: Path):
        self.root = root

    def sha256(self, path: str) -> str:
        st = os.stat(path)
        if st.st_size < self.FROM or not stat.S_ISREG(st.st_mode):
            return sha256(Path(path))
        identity = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
        record = self._record(path)
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            kept = json.loads(record.read_text())
            if kept["path"] == path and kept["identity"] == identity:
                return kept["sha256"]
        settled = files_settled(st, max(st.st_mtime_ns, st.st_ctime_ns))  # asked before reading it
        value = sha256(Path(path))
        if settled:
            _write_json(record, {"path": path, "identity": identity, "sha256": value})
        return value

    def sizes(self) -> list[tuple[float, int, Path]]:
        """(last written, bytes, file) of every record, for trimming."""
        found = []
        for path in self.root.glob("*/*.json"):
            with contextlib.suppress(OSError):
                st = path.stat()
                found.append((st.st_mtime, st.st_size, path))
        return found

    def _record(self, path: str) -> Path:
        name = hashlib.sha256(path.encode()).hexdigest()
        return self.root / name[:2] / f"{name}.json"


class StageCache:
    """One cache folder, shared by every process and thread that opens it."""

    def __init__(self, root: Path, max_bytes: int = DEFAULT_MAX_BYTES):
        self.root = Path(os.path.abspath(root))
        self.max_bytes = max_bytes
        _own_folder(self.root)
        for sub in ("entries", "deps", "tmp", "figures", "templates", "files"):
            (self.root / sub).mkdir(mode=0o700, exist_ok=True)
        self.pages = Pages(self.root / "figures", self.root / "templates")
        self.files = KnownFiles(self.root / "files")
        self._stored: int | None = None  # bytes this process stored since its last trim (None: none yet)
        self._count = threading.Lock()

    # --- keys -------------------------------------------------------------------------------------

    def key(self, stage: Stage, parts: Mapping[str, Any]) -> str:
        return digest({"schema": SCHEMA, "stage": stage.name, "function": stage.function,
                       "blocked": stage.blocked_imports, "environment": environment_digest(), "parts": parts})

    @staticmethod
    def with_reads(prekey: str, reads: Iterable[tuple[str, str]]) -> str:
        return digest({"prekey": prekey, "reads": sorted(reads)})

    # --- entries ----------------------------------------------------------------------------------

    def get(self, key: str, root: Path, digests: Digests | None = None) -> Outcome | None:
        """The cached outcome with its files copied under `root` (which must not exist yet), or
        None. An entry that fails its manifest is deleted, never used. `digests` learns each
        restored file's sha256, as computed while it was copied (not re-read from the entry,
        which another process may have replaced since)."""
        root = Path(os.path.abspath(root))
        if root.exists() and any(root.iterdir()):
            raise ValueError(f"{root}: a cached stage is restored into a new folder only")
        entry = self._entry(key)
        try:
            manifest = json.loads((entry / MANIFEST).read_text())
        except (OSError, ValueError):
            return None
        try:
            if manifest.get("schema") != SCHEMA or manifest.get("key") != key:
                raise _Corrupt
            blob = (entry / RESULT).read_bytes()
            if hashlib.sha256(blob).hexdigest() != manifest["result"]:
                raise _Corrupt
            learned = _read_verified(entry)
            placed = {f["path"]: _place(entry / "files" / f["path"], root / f["path"], f["sha256"],
                                        learned.get(f["path"]) or f.get("stat")) for f in manifest["files"]}
            verified = {rel: value for rel, (value, _) in placed.items()}
            outcome = pickle.loads(blob)  # noqa: S301 - our own folder (checked), hash-verified
            if not isinstance(outcome, Outcome):
                raise _Corrupt
        except (_Corrupt, OSError, KeyError, TypeError, ValueError, pickle.UnpicklingError, AttributeError,
                ImportError, EOFError):
            shutil.rmtree(root, ignore_errors=True)
            self._drop(entry)
            return None
        with contextlib.suppress(OSError):
            _touch(entry / MANIFEST)
        stored = {f["path"]: f.get("stat") for f in manifest["files"]}
        news = {rel: st for rel, (_, st) in placed.items() if st is not None and st != stored[rel]}
        if news and news != learned:  # files stored unsettled, now checked and settled: not read next time
            _write_json(entry / VERIFIED, news)
        for rel, value in verified.items() if digests is not None else ():
            digests.learn(root / rel, value)
        return rebase(outcome, manifest["root"], str(root))

    def put(self, key: str, outcome: Outcome, root: Path, digests: Digests | None = None) -> None:
        """Store a cacheable outcome and the files under `root` that its result names (hard-linked
        where they can be, as `get` restores them); `digests` learns each file's sha256."""
        if not outcome.cacheable:
            return
        root = Path(os.path.abspath(root))
        entry = self._entry(key)
        if entry.exists():
            return
        tmp = Path(tempfile.mkdtemp(prefix=f"{socket.gethostname()}-{os.getpid()}-", dir=self.root / "tmp"))
        try:
            files = []
            for rel in referenced(outcome, root):
                value, settled = _place(root / rel, tmp / "files" / rel, None)
                files.append({"path": rel, "sha256": value, "bytes": (root / rel).stat().st_size, "stat": settled})
                if digests is not None:
                    digests.learn(root / rel, value)
            blob = pickle.dumps(Outcome(outcome.result, outcome.error, None, outcome.deliberate))
            (tmp / RESULT).write_bytes(blob)
            total = len(blob) + sum(f["bytes"] for f in files)
            (tmp / MANIFEST).write_text(json.dumps({
                "schema": SCHEMA, "key": key, "root": str(root), "result": hashlib.sha256(blob).hexdigest(),
                "files": files, "bytes": total, "created": time.time()}))
            _touch(tmp / MANIFEST)
            entry.parent.mkdir(mode=0o700, exist_ok=True)
            try:
                os.rename(tmp, entry)
            except OSError:  # another process stored the same key meanwhile: theirs is as good
                shutil.rmtree(tmp, ignore_errors=True)
        except (OSError, pickle.PicklingError, TypeError, AttributeError):
            shutil.rmtree(tmp, ignore_errors=True)  # a cache that cannot store is only slower
            return
        with self._count:
            due = self._stored is None or self._stored + total > self.max_bytes * TRIM_EVERY
            self._stored = 0 if due else self._stored + total
        if due:
            self.trim()

    # --- the export's file lists --------------------------------------------------------------------

    def variants(self, prekey: str) -> list[list[str]]:
        try:
            found = json.loads(self._deps(prekey).read_text())["variants"]
            return [[str(p) for p in v] for v in found if isinstance(v, list)]
        except (OSError, ValueError, KeyError, TypeError):
            return []

    def remember(self, prekey: str, paths: list[str]) -> None:
        found = [v for v in self.variants(prekey) if v != paths]
        data = json.dumps({"variants": [paths, *found][:MAX_VARIANTS]}).encode()
        path = self._deps(prekey)
        path.parent.mkdir(mode=0o700, exist_ok=True)
        with contextlib.suppress(OSError):
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)

    # --- size ---------------------------------------------------------------------------------------

    def trim(self) -> None:
        """Delete the least recently used entries and figures while the cache is over its bound. One
        process trims at a time; the others skip it (the one trimming will get there). Figures are
        drawn without a trim (a few tens of KB each): the next stored stage's trim counts them."""
        from filelock import FileLock, Timeout

        try:
            with FileLock(str(self.root / "trim.lock"), timeout=0):
                entries = [*self._entries(), *self.pages.sizes(), *self.files.sizes()]
                total = sum(size for _, size, _ in entries)
                if total > self.max_bytes:
                    for _, size, entry in sorted(entries):
                        if entry.is_dir():
                            self._drop(entry)
                        else:  # a figure, a compiled template or a known file's record
                            with contextlib.suppress(OSError):
                                entry.unlink()
                        total -= size
                        if total <= self.max_bytes * TRIM_TO:
                            break
                self._sweep_tmp()
        except Timeout:
            return

    def _entries(self) -> list[tuple[float, int, Path]]:
        """(last use, bytes, folder) of every entry."""
        found = []
        for manifest in (self.root / "entries").glob(f"*/*/{MANIFEST}"):
            try:
                found.append((manifest.stat().st_mtime, int(json.loads(manifest.read_text())["bytes"]),
                              manifest.parent))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return found

    def _sweep_tmp(self) -> None:
        """Half-written entries of processes that died (this host's, by pid; any, after a day)."""
        host = socket.gethostname()
        for tmp in (self.root / "tmp").iterdir():
            owner, _, rest = tmp.name.partition("-")
            pid = rest.partition("-")[0]
            try:
                dead = owner == host and pid.isdigit() and not _alive(int(pid))
                if dead or time.time() - tmp.stat().st_mtime > 86400:
                    shutil.rmtree(tmp, ignore_errors=True)
            except OSError:
                continue

    def _entry(self, key: str) -> Path:
        return self.root / "entries" / key[:2] / key

    def _deps(self, prekey: str) -> Path:
        return self.root / "deps" / prekey[:2] / f"{prekey}.json"

    def _drop(self, entry: Path) -> None:
        """Out of sight first (a rename), then deleted: a reader sees a whole entry or none."""
        aside = self.root / "tmp" / f"{socket.gethostname()}-{os.getpid()}-drop-{entry.name}-{time.monotonic_ns()}"
        try:
            os.rename(entry, aside)
        except OSError:
            return
        shutil.rmtree(aside, ignore_errors=True)


class _Corrupt(Exception):
    pass


class Pages:
    """What report pages are made of (`bridge.reporters.html.PageCache`).

    Figures by content: an SVG is a pure function of the data it plots, of the drawing code
    (bridge's, by content) and of matplotlib's version, which together are its key. Each is one
    JSON file holding the SVG and its sha256, written to a temporary name and renamed into place;
    one that does not match its sha256 is deleted and drawn again.

    `templates`: the folder of jinja2's bytecode cache, which keys each compiled template by its
    name and checks it against the template source's checksum and the Python version."""

    def __init__(self, root: Path, templates: Path):
        self.root = root
        self.templates = templates

    def svg(self, name: str, data: Any, draw: Callable[[], str]) -> str:
        key = digest({"schema": SCHEMA, "figure": name, "data": data, "environment": environment_digest()})
        path = self.root / key[:2] / f"{key}.json"
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            kept = json.loads(path.read_text())
            if kept["key"] == key and hashlib.sha256(kept["svg"].encode()).hexdigest() == kept["sha256"]:
                with contextlib.suppress(OSError):
                    _touch(path)
                return kept["svg"]
            path.unlink(missing_ok=True)
        drawn = draw()
        data_out = json.dumps({"key": key, "sha256": hashlib.sha256(drawn.encode()).hexdigest(), "svg": drawn})
        with contextlib.suppress(OSError):
            path.parent.mkdir(mode=0o700, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(data_out)
            os.replace(tmp, path)
        return drawn

    def sizes(self) -> list[tuple[float, int, Path]]:
        """(last use, bytes, file) of every figure and compiled template, for trimming."""
        found = []
        for path in [*self.root.glob("*/*.json"), *self.templates.glob("*.cache")]:
            with contextlib.suppress(OSError):
                st = path.stat()
                found.append((st.st_mtime, st.st_size, path))
        return found


def _own_folder(root: Path) -> None:
    """The cache folder must be a folder of this user that nobody else can write."""
    try:
        if not os.path.lexists(root):
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(root)
    except OSError as e:
        raise UsageError(f"--cache-dir {root}: cannot create or open the folder ({e.strerror})") from None
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"--cache-dir {root}: exists and is not a folder")
    if st.st_uid != os.getuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UsageError(f"--cache-dir {root}: must belong to you and be writable by nobody else (cached results "
                         "are loaded as they are; `chmod go-w` it, or choose another folder or --no-cache)")


def _touch(path: Path) -> None:
    """Mark `path` used now, for trimming by last use: with the clock's own nanoseconds, since the
    kernel stamps writes from a coarse clock (milliseconds), and a write and a use that close would
    tie and trim in any order."""
    now = time.time_ns()
    os.utime(path, ns=(now, now))


def _copy_checked(src: Path, dest: Path, expected: str | None) -> str:
    """Copy `src` to `dest`, hashing as it goes; raise `_Corrupt` if the hash is not `expected`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    with open(src, "rb") as fin, open(dest, "xb") as fout:
        for chunk in iter(lambda: fin.read(1 << 20), b""):
            h.update(chunk)
            fout.write(chunk)
    value = h.hexdigest()
    if expected is not None and value != expected:
        raise _Corrupt
    shutil.copystat(src, dest)
    return value


def _place(src: Path, dest: Path, expected: str | None,
           trusted: list[int] | None = None) -> tuple[str, list[int] | None]:
    """`src` at `dest` (a stage's file into an entry, or an entry's file into a run), checked against
    `expected` when given; returns its sha256, and its [inode, bytes, mtime_ns] when it is settled
    (`bridge.base.files.settled`) and so may be trusted by them next time. Hard-linked when both are
    on one filesystem (no bytes written: most of a warm run's time was copying, and a cold run
    copied every artifact into the cache), copied otherwise. A link shares the entry's bytes, so
    what is placed is checked after linking: by the times `trusted` holds when they still hold (a
    write through any link, a run's or a published artifact's, would have moved them), else by
    hashing it; an entry whose file was changed fails its manifest on the next run and is dropped,
    never used. A warm run of four trained models hashed 0.7 GB to find them unchanged."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:  # another filesystem, or one without links
        return _copy_checked(src, dest, expected), None
    st = os.stat(dest)
    now = [st.st_ino, st.st_size, st.st_mtime_ns]
    if expected is not None and trusted is not None and list(trusted) == now:
        return expected, now
    settled = now if files_settled(st) else None  # asked before reading it
    value = sha256(dest)
    if expected is not None and value != expected:
        raise _Corrupt
    return value, settled


def _read_verified(entry: Path) -> dict[str, list[int]]:
    try:
        found = json.loads((entry / VERIFIED).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(found, dict):
        return {}
    return {k: v for k, v in found.items() if isinstance(v, list) and len(v) == 3 and all(type(x) is int for x in v)}


def _write_json(path: Path, value: Any) -> None:
    """Atomically (a reader sees the old file or the new); a failure is only slower next time."""
    with contextlib.suppress(OSError):
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(value))
        os.replace(tmp, path)


def _alive(pid: int) -> bool:
    from bridge.base.files import alive

    return alive(pid)


# --- paths inside results ---------------------------------------------------------------------------

def _walk_strings(value: Any, seen: set[int] | None = None) -> Iterable[str]:
    seen = set() if seen is None else seen
    if id(value) in seen:
        return
    if isinstance(value, str):
        yield value
        return
    if isinstance(value, os.PathLike):
        yield os.fspath(value)
        return
    seen.add(id(value))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _walk_strings(getattr(value, f.name), seen)
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _walk_strings(k, seen)
            yield from _walk_strings(v, seen)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for v in value:
            yield from _walk_strings(v, seen)


def referenced(outcome: Outcome, root: Path) -> list[str]:
    """Files under `root` the result names (a folder stands for every file in it; a file's
    `<name>.data`, an ONNX model's external tensors, comes with it), relative to `root`."""
    base = os.path.abspath(root)
    found: set[str] = set()
    for text in _walk_strings(outcome.result):
        if not (text == base or text.startswith(base + os.sep)):
            continue
        path = Path(text)
        if path.is_dir():
            found.update(str(f.relative_to(base)) for f in path.rglob("*") if f.is_file())
        elif path.is_file():
            found.add(str(path.relative_to(base)))
            data = Path(f"{text}.data")
            if data.is_file():
                found.add(str(data.relative_to(base)))
    return sorted(found)


def rebase(value: Any, old: str, new: str) -> Any:
    """`value` with every path under `old` moved under `new` (dataclasses, containers, strings)."""
    if isinstance(value, str):
        return new + value[len(old):] if value == old or value.startswith(old + os.sep) else value
    if isinstance(value, Path):
        return Path(rebase(str(value), old, new))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        copy = object.__new__(type(value))
        copy.__dict__.update(value.__dict__)
        for f in dataclasses.fields(value):
            object.__setattr__(copy, f.name, rebase(getattr(value, f.name), old, new))
        return copy
    if isinstance(value, dict):
        return type(value)({rebase(k, old, new): rebase(v, old, new) for k, v in value.items()})
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(rebase(v, old, new) for v in value))
    if isinstance(value, (list, tuple, set, frozenset)):
        return type(value)(rebase(v, old, new) for v in value)
    return value
