"""How every hostile case is run and judged, the same way for all of them.

A case runs the installed `bridge` console script in a subprocess, in a folder that holds:
- `secret`: a FIFO standing for a private key. A thread blocks opening it for writing; the open
  returns only if something opens it for reading. So "the secret was never read" is proven, not
  inferred from access times.
- `out/`: the output of an earlier, good run (a real conversion, made once per session). After the
  case, every file of it must be byte-identical (a failed run may add only `.bridge-failed/`).
- `CANARY`: must never appear (payloads that would run touch it).
Then: the exit code; for refusals (exit 2) exactly one line on stderr; never a traceback; the
message's needles; and no process carrying the case's tag still running.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import BRIDGE

CLASSES = {
    1: "external data and files outside the model",
    2: "a failed or killed run keeps the previous output",
    3: "user files are never overwritten or deleted",
    4: "command-line parse errors",
    5: "printed text is never markup",
    6: "option values are checked",
    7: "resource exhaustion is bounded",
    8: "small gaps",
}


@dataclass
class Run:
    """What a case runs and expects."""

    argv: list[str]
    code: int
    needles: tuple[str, ...] = ()
    one_line: bool | None = None  # default: exactly for exit 2
    previous_intact: bool = True  # the earlier output in `out/` must survive
    timeout: float = 240
    env: dict[str, str] = field(default_factory=dict)
    preexec: Callable[[], None] | None = None
    during: Callable[[subprocess.Popen], None] | None = None  # e.g. send a signal
    after: Callable[[subprocess.CompletedProcess], None] | None = None  # extra assertions
    cleanup: Callable[[], None] | None = None


@dataclass(frozen=True)
class Case:
    id: str
    cls: int
    mechanism: str  # one sentence: what makes this case different from the others of its class
    build: Callable[[Path], Run]


class Secret:
    """A FIFO that tells whether anything opened it for reading."""

    def __init__(self, path: Path):
        self.path = path
        os.mkfifo(path)
        self.opened = threading.Event()
        self.closing = False
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        fd = os.open(self.path, os.O_WRONLY)  # blocks until a reader opens the FIFO
        try:
            if not self.closing:
                self.opened.set()
                os.write(fd, b"-----BEGIN OPENSSH PRIVATE KEY-----\n" + b"\x17" * 4096)
        except OSError:
            pass
        finally:
            os.close(fd)

    def was_read(self) -> bool:
        self.closing = True
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)  # releases the watcher
        try:
            self.thread.join(5)
        finally:
            os.close(fd)
        return self.opened.is_set()


def snapshot(folder: Path) -> dict[str, str]:
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def tagged_processes(tag: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if tag.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return [p for p in found if p != os.getpid()]


def foreground(then: Callable[[], None] | None = None) -> Callable[[], None]:
    """A child's SIGINT as a terminal's foreground job has it: a suite started in the background
    (`pytest &`) passes SIGINT on ignored, and the Ctrl-C cases would wait for a run that, rightly,
    ignores it."""
    def preexec() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if then is not None:
            then()
    return preexec


def run_case(case: Case, tmp: Path, previous: Path) -> None:
    shutil.copytree(previous, tmp / "out", symlinks=True)
    secret = Secret(tmp / "secret")
    run = case.build(tmp)
    before = snapshot(tmp / "out")  # after the case's own set-up (a user's file planted in out/, ...)
    tag = f"bridge-corpus-{uuid.uuid4().hex}"
    env = {**os.environ, "BRIDGE_CORPUS_TAG": tag, **run.env}
    try:
        proc = subprocess.Popen([str(BRIDGE), *map(str, run.argv)], cwd=tmp, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, preexec_fn=foreground(run.preexec))
        if run.during:
            run.during(proc)
        out, err = proc.communicate(timeout=run.timeout)
        result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    finally:
        if run.cleanup:
            run.cleanup()
    read = secret.was_read()
    leftovers = _wait_gone(tag)
    text = f"[{case.id}] exit {result.returncode}\nstderr:\n{result.stderr}\nstdout:\n{result.stdout[-2000:]}"
    assert result.returncode == run.code, text
    assert "Traceback" not in result.stderr + result.stdout, text
    if run.one_line if run.one_line is not None else run.code == 2:
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1, text
    for needle in run.needles:
        assert needle in result.stderr, f"missing {needle!r}\n{text}"
    assert not read, f"[{case.id}] the secret was opened\n{text}"
    assert not (tmp / "CANARY").exists(), f"[{case.id}] a payload ran\n{text}"
    assert not leftovers, f"[{case.id}] still running after bridge exited: {leftovers}"
    if run.previous_intact:
        after = snapshot(tmp / "out")
        kept = {k: v for k, v in after.items() if not k.startswith(".bridge-failed/")}
        changed = sorted(set(kept.items()) ^ set(before.items()))
        assert kept == before, f"[{case.id}] the previous output changed: {changed}"
    if run.after:
        run.after(result)


def _wait_gone(tag: str, seconds: float = 10) -> list[int]:
    deadline = time.monotonic() + seconds
    while True:
        left = tagged_processes(tag)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)
