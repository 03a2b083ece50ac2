"""The output folder: a run's artifacts and report replace the previous run's as one set, and only
when every artifact passed.

Promises, each tested (tests/e2e/hostile/):
- One run at a time: `--out` is locked for the whole run; a second run exits 2 at once.
- Nothing of the user's is overwritten or deleted: before anything runs, every file the run would
  write must be absent or be one a previous `bridge convert` report in this folder lists with a
  matching sha256 (folders included), and none may be an input of the run.
- A run that fails (exit 1 or 3) or is killed leaves the previous output whole. A failed run's
  files and report go to `<out>/.bridge-failed/` instead, which the message names.
- `report.json` always describes exactly the files beside it; `report.html` is the same report as
  a page, written just before it.
- `--junit` and validate's `--report`/`--html` may replace only a file an earlier run wrote in that
  format, never an input or anything else.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bridge.base.errors import UsageError
from bridge.base.files import alive, place, remove, sha256_remembered, sweep, write_atomic
from bridge.report import Report
from bridge.reporters import html, junit
from bridge.reporters.json import JsonReporter
from bridge.reporters.json import read as read_report

STAGED = "shipped"  # in the work folder: finished artifacts wait here until `publish`
FAILED = ".bridge-failed"  # a failed run's artifacts and report, inside --out
REPORT = "report.json"
PAGE = "report.html"  # the same report for people, beside report.json
JOURNAL = ".bridge-publish.json"  # what a publish in progress may replace and brings in


@dataclass
class OutputFolder:
    """`--out` for one run: locked while the run lasts, with what earlier runs left in it."""

    path: Path
    suffixes: frozenset[str]  # what artifacts are called (.onnx, .tflite, .mlpackage): nothing else is ours
    hook: Callable[[str], None] | None = None  # the crash tests' faults at "place" and "place-swap"
    _lock: object = field(default=None, repr=False)
    _created: bool = field(default=False, repr=False)

    def __enter__(self) -> OutputFolder:
        """Lock the folder itself (flock on its descriptor): the lock dies with the process, so a
        killed run leaves none behind, and no lock file appears among the user's files (filelock,
        which needs one, was not used for that reason)."""
        import fcntl

        if self.path.exists() and not self.path.is_dir():
            raise UsageError(f"--out {self.path}: exists and is not a folder")
        self._created = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as e:
            raise UsageError(f"--out {self.path}: cannot create or open the folder ({e.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise UsageError(f"--out {self.path}: another bridge run is writing to this folder; wait for it "
                             "to finish or choose another --out") from None
        self._lock = fd
        sweep(self.path)  # hidden work folders of killed runs
        return self

    def __exit__(self, *exc) -> None:
        """Release the lock; a folder this run created and left empty (it stopped on bad input
        before publishing anything) goes too."""
        if self._created:
            with contextlib.suppress(OSError):  # not empty: it holds what the run published
                self.path.rmdir()
        os.close(self._lock)  # closing the descriptor releases the lock

    def check_destinations(self, names: list[str], inputs: list[Path]) -> None:
        """Refuse, before anything runs, a run that would write over a file it does not own or over
        one of its own inputs."""
        owned = self._owned(self.path)
        real_inputs = [p for p in inputs if p is not None and os.path.lexists(p)]
        for p in real_inputs:
            if p.is_dir() and _inside(self.path, p):
                raise UsageError(f"--out {self.path} lies inside the input {p}: choose another --out")
        for name in names:
            dest = self.path / name
            for p in real_inputs:
                if os.path.lexists(dest) and (_same(dest, p) or (p.is_dir() and _inside(dest, p))):
                    raise UsageError(f"{dest} is an input of this run ({p}); bridge never writes over its "
                                     "inputs: choose another --out")
            if os.path.lexists(dest) and name not in owned:
                raise UsageError(f"{dest} exists and no earlier bridge report in {self.path} lists it with this "
                                 "content; move it away or choose another --out")
        for name, ours, what in ((REPORT, _is_report, "a bridge report"), (PAGE, html.is_page, "a bridge page")):
            dest = self.path / name
            if os.path.lexists(dest) and (dest.is_symlink() or not dest.is_file() or not ours(dest)):
                raise UsageError(f"{dest} exists and is not {what}; move it away or choose another --out")

    def writes(self, path: Path) -> bool:
        """Whether `path` is one this run may write in `--out` (its report, page or an artifact name):
        another output (`--junit`) must not land on it."""
        folder = path.parent.resolve() if path.parent.exists() else None
        return folder in (self.path.resolve(), (self.path / FAILED).resolve()) and (
            path.name in (REPORT, PAGE, JOURNAL) or Path(path.name).suffix in self.suffixes | {".data"})

    def publish(self, report: Report, staged: Path, pages: html.PageCache | None = None) -> None:
        """Swap the previous run's output for this run's when every artifact passed; otherwise put
        this run's files in `.bridge-failed/` and leave the previous output as it was. `pages` keeps
        the page's figures by content and its compiled template (the stage cache's)."""
        if report.exit_code != 0:
            self._publish_into(self.path / FAILED, report, staged, pages)
            return
        self._publish_into(self.path, report, staged, pages)
        failed = self.path / FAILED
        if failed.is_dir():  # a stale failure beside a good output would mislead
            self._clear(failed)

    def _owned(self, folder: Path) -> set[str]:
        """What earlier runs shipped into `folder`: its report's artifacts, and those of a publish
        that was killed half way (its journal)."""
        return owned_artifacts(folder / REPORT, self.suffixes) | _journal_owned(folder, self.suffixes)

    def _publish_into(self, folder: Path, report: Report, staged: Path, pages: html.PageCache | None) -> None:
        """A journal first lists what is ours to replace or delete (the old report's artifacts) and
        what comes in, so a run killed from here on leaves a folder the next run can still clean
        up; the old report goes, so a killed run leaves no report rather than one describing files
        it replaced; then the artifacts move in, those only the old report listed are deleted, and
        the new report is written last."""
        folder.mkdir(exist_ok=True)
        path = folder / REPORT
        page = html.render(report.to_json(), pages)  # before anything moves: a failure to render changes nothing
        previous = self._owned(folder)
        incoming = {name: digest for a in report.artifacts if a.path for name, digest in _files(a.to_json())}
        shipped = list(incoming)
        journal = folder / JOURNAL
        write_atomic(journal, json.dumps({
            "pid": os.getpid(),
            "owned": [{"path": n, "sha256": sha256_remembered(folder / n)} for n in sorted(previous)],
            "incoming": [{"path": n, "sha256": d} for n, d in incoming.items()],
        }).encode())
        path.unlink(missing_ok=True)
        (folder / PAGE).unlink(missing_ok=True)
        for name in shipped:  # an ONNX file's external data goes in before the file that points at it
            place(staged / name, folder / name, self.hook)
        for name in sorted(previous - set(shipped)):
            remove(folder / name)
        write_atomic(folder / PAGE, page)
        report.written["page"] = folder / PAGE
        JsonReporter().write(report, path)
        journal.unlink()

    def _clear(self, folder: Path) -> None:
        for name in self._owned(folder):
            remove(folder / name)
        if _is_report(folder / REPORT):
            (folder / REPORT).unlink()
        if html.is_page(folder / PAGE):
            (folder / PAGE).unlink()
        (folder / JOURNAL).unlink(missing_ok=True)
        if not any(folder.iterdir()):
            folder.rmdir()


def _journal_owned(folder: Path, suffixes: frozenset[str]) -> set[str]:
    """Entries of a killed publish's journal still as it recorded them (a live run's is not ours)."""
    try:
        journal = json.loads((folder / JOURNAL).read_text())
        if alive(int(journal["pid"])):
            return set()
        entries = [*journal["owned"], *journal["incoming"]]
        return {e["path"] for e in entries if _ours(folder, e.get("path"), e.get("sha256"), suffixes)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return set()


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except OSError:
        return False


def _files(artifact: dict) -> list[tuple[str, str]]:
    """The files one artifact ships, with their sha256: its external data (ONNX over 2 GB), then
    itself."""
    data = artifact.get("external_data")
    own = (artifact["path"], artifact["sha256"])
    return [(data["path"], data["sha256"]), own] if data else [own]


def _is_report(path: Path) -> bool:
    """Any version's: a report of a version this bridge cannot read is still bridge's to replace."""
    try:
        return str(json.loads(path.read_text())["schema"]).startswith("bridge.report/")
    except (OSError, ValueError, KeyError, TypeError):
        return False


# What each report option writes, and how an earlier run's file of that kind is recognized.
KINDS = {"--report": (_is_report, "a bridge report"), "--html": (html.is_page, "a bridge page"),
         "--junit": (junit.is_junit, "a bridge JUnit file")}


def check_report_destination(path: Path, inputs: list[Path], flag: str = "--report") -> None:
    """`--report`, `--html` or `--junit PATH` may replace only a file an earlier bridge run wrote
    in that format, never an input or a user's file."""
    ours, what = KINDS[flag]
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a folder")
    if not os.path.lexists(path):
        return
    for p in inputs:
        if p is not None and (_same(path, p) or (p.is_dir() and _inside(path, p))):
            raise UsageError(f"{flag} {path} is an input of this run ({p}); bridge never writes over its inputs")
    if path.is_symlink() or not path.is_file() or not ours(path):
        raise UsageError(f"{flag} {path}: exists and is not {what}; move it away or choose another path")


def check_distinct(paths: dict[str, str | None]) -> None:
    """Two report options naming one file would overwrite each other."""
    seen: dict[str, str] = {}
    for flag, p in paths.items():
        if not p:
            continue
        key = os.path.abspath(p)
        if key in seen:
            raise UsageError(f"{seen[key]} and {flag} name the same file {p}")
        seen[key] = flag


def owned_artifacts(path: Path, suffixes: frozenset[str]) -> set[str]:
    """The artifacts a previous `bridge convert` shipped beside `path` that are still as its
    report recorded them. Nothing else is ours to delete or replace: a `bridge validate` report
    (it names the user's own files), names with a folder in them, other suffixes, files changed
    since."""
    try:
        old = read_report(path)  # version 1 reports of earlier runs too
        if old["command"] != "convert":
            return set()
        found = set()
        for a in old["artifacts"]:
            if _ours(path.parent, a.get("path"), a.get("sha256"), suffixes):
                found.add(a["path"])
                data = a.get("external_data") or {}
                if data.get("path") == f"{a['path']}.data" and _ours(path.parent, data["path"], data.get("sha256"),
                                                                    suffixes):
                    found.add(data["path"])
        return found
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # no usable report: nothing is ours
        return set()


def _ours(folder: Path, name, digest, suffixes: frozenset[str]) -> bool:
    """A plain artifact name in `folder` whose content still has the recorded hash."""
    if not isinstance(name, str) or "\0" in name:
        return False
    f = folder / name
    return (name == f.name and not name.startswith(".") and f.suffix in suffixes | {".data"} and f.exists()
            and not f.is_symlink() and sha256_remembered(f) == digest)
