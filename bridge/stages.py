"""Run one heavy stage in a fresh child process.

A stage is declared (`Stage(name, function, blocked_imports)`), not switched: the child applies
what it declares. Every export, conversion and inference runs through `run_stage`: the child is a
fresh interpreter (never forked, so it starts without TensorFlow or torch already imported: the
TFLite interpreter only rejects Flex ops in a process that never imported TensorFlow; and nothing
of the gateway's, not even its main module), quiets framework logging before any import, and
sends back either its result or its exception. A child that dies by a signal, runs out of memory
or outlives its time limit becomes a `StageCrashed` naming the stage; the caller decides whether
that ends one artifact or the whole run.

The child leads its own process group, and the whole group is killed when the stage ends, so
nothing a stage started (worker pools, a converter's helper processes) outlives it; on Linux the
child also dies with the gateway, even when the gateway is killed outright.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bridge.base.cpus import thread_environment
from bridge.base.errors import BridgeError, ConversionError, StageCrashed, one_line

# Set in every child before anything imports a framework.
QUIET_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "TF_ENABLE_ONEDNN_OPTS": "0",
    "GRPC_VERBOSITY": "ERROR",
    "GLOG_minloglevel": "3",
    "KMP_WARNINGS": "0",
    "PYTHONWARNINGS": "ignore",
    "TF_USE_LEGACY_KERAS": "0",
    "KERAS_BACKEND": "tensorflow",
    # Nothing below the gateway may reach the network.
    "HF_HUB_OFFLINE": "1",
    "NO_PROXY": "*",
}


@dataclass(frozen=True)
class Stage:
    """One unit of work run in a child: its name (in errors and reports), the "module:function"
    it calls, and frameworks the child makes look absent (coremltools imports TensorFlow, torch and
    scikit-learn only to probe for them: 8 s of a Core ML runtime child's 9)."""

    name: str
    function: str
    blocked_imports: tuple[str, ...] = ()
    records_reads: bool = False  # list every file it read (the stage cache keys on their content)


@dataclass(frozen=True)
class Fault:
    """Misbehaviour at a named point, for the crash tests, which pass it in (`convert(...,
    faults=...)`); production code never looks for one anywhere else. A point is a stage name (the
    child misbehaves before it imports anything) or `place` / `place-swap` in the gateway itself
    (before anything is replaced, and between moving an old folder aside and moving the new one
    in). `how`: segv, abort, hang (saying on stderr where, so a test can kill the gateway there) or
    hang-tree (a hang that first starts a process of its own, as converters' worker pools do)."""

    point: str
    how: str = "segv"

    def hit(self, point: str) -> None:
        if point != self.point:
            return
        if self.how == "segv":
            os.kill(os.getpid(), signal.SIGSEGV)
        elif self.how == "abort":
            os.abort()
        elif self.how in ("hang", "hang-tree"):
            import subprocess
            import time

            if self.how == "hang-tree":
                subprocess.Popen([sys.executable, "-c", "import time; time.sleep(10**6)"])
            sys.stderr.write(f"bridge fault: hanging at {point}\n")
            sys.stderr.flush()
            time.sleep(10**6)


@dataclass(frozen=True)
class Limits:
    timeout: float | None = None  # seconds
    max_memory: int | None = None  # bytes of address space
    verbose: bool = False
    faults: tuple[Fault, ...] = ()
    threads: int | None = None  # the stage's frameworks' threads (`bridge.base.cpus`); None: their default
    preload: tuple[str, ...] = ()  # modules the child imports as it starts, before its job arrives

    @property
    def imports_first(self) -> tuple[str, ...]:
        """`preload`, unless a memory limit is set: the child sets it when its job arrives, and it
        must hold those imports too."""
        return () if self.max_memory else self.preload

    def hit(self, point: str) -> None:
        for fault in self.faults:
            fault.hit(point)


@dataclass
class Outcome:
    """What a stage ended with: its result, or the error it raised; and, for a stage that
    `records_reads`, the files it read with their sha256 when it ended."""

    result: Any = None
    error: BridgeError | None = None
    reads: tuple[tuple[str, str], ...] | None = None
    deliberate: bool = True  # the error is one the stage raised itself, not a crash, a time-out or memory
    seconds: float = 0.0  # the child's wall time, from its start (not counting any wait for a slot)

    @property
    def cacheable(self) -> bool:
        """Only what the same inputs would give again: a result, or an error the stage's own code
        raised (bridge is deterministic). A crash, a time-out or running out of memory depends on
        the machine and the moment, and a non-bridge exception may be the disk's or the network's."""
        return self.error is None or self.deliberate

    def unwrap(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


def run_stage(stage: Stage, *args: Any, limits: Limits = Limits(), **kwargs: Any) -> Any:
    """Call the stage's function with `*args, **kwargs` in a fresh child process and return its result.

    Errors the child raises on purpose come back as themselves; anything else becomes a
    `ConversionError` for the stage with the child's last log lines.
    """
    return call_stage(stage, *args, limits=limits, **kwargs).unwrap()


def call_stage(stage: Stage, *args: Any, limits: Limits = Limits(), **kwargs: Any) -> Outcome:
    """`run_stage`, with the error returned in the `Outcome` rather than raised."""
    start = time.perf_counter()
    outcome = _outcome(stage, args, kwargs, limits)
    outcome.seconds = time.perf_counter() - start
    return outcome


def _outcome(stage: Stage, args, kwargs, limits: Limits) -> Outcome:
    try:
        status, payload, reads = _spawn(stage, args, kwargs, limits)
    except StageCrashed as e:
        return Outcome(error=e, deliberate=False)
    if status == "ok":
        return Outcome(result=payload, reads=reads)
    if isinstance(payload, BridgeError):
        if isinstance(payload, ConversionError) and not payload.stage:
            payload.stage = stage.name
        return Outcome(error=payload, reads=reads, deliberate=not isinstance(payload, StageCrashed))
    return Outcome(error=ConversionError(str(payload), stage=stage.name), reads=reads, deliberate=False)


def _spawn(stage: Stage, args, kwargs, limits: Limits) -> tuple[str, Any, Any]:
    name = stage.name
    child = SPARES.take(limits) or _Child.launch(limits)
    try:
        child.send(stage, args, kwargs, limits)
        if not child.receiver.poll(limits.timeout):
            raise StageCrashed(f"stage {name} timed out after {limits.timeout:g} s", stage=name)
        try:
            message = child.receiver.recv()
        except EOFError:
            child.proc.wait()
            raise StageCrashed(_death(name, child.proc.returncode, child.log, limits), stage=name) from None
        child.proc.wait()
        return message
    finally:
        child.end()


# The child's whole program: nothing of the gateway's is imported first (multiprocessing's spawn
# would run the gateway's main module again in every child: for the `bridge` script, the CLI with
# typer and rich, half a second and 30 MB per stage).
_CHILD = "import sys; from bridge.stages import _child_entry; _child_entry(int(sys.argv[1]), sys.argv[2:])"


@dataclass
class _Child:
    """A started child waiting for its job on stdin, in a process group of its own, with the end
    of the pipe its result comes back on, the file its output goes to, and a temporary folder of
    its own (its TMPDIR), removed with it: a child leaves by `os._exit`, so exit hooks never run,
    and coremltools deletes the temporary package every model it makes holds only in one (each
    Core ML conversion left one in /tmp, the size of its weights; a test suite filled the disk)."""

    proc: Any
    receiver: Any
    log: str
    variant: tuple
    tmp: str
    expected: bool = False  # started for a stage known to come (`Spares.expect`): only its take or `forget` ends it

    @classmethod
    def launch(cls, limits: Limits) -> _Child:
        import subprocess
        from multiprocessing.connection import Connection

        _sweep_once()
        with tempfile.NamedTemporaryFile(prefix=f"{_PREFIX}{os.getpid()}-", suffix=".log", delete=False) as f:
            log = f.name
        tmp = tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-")
        read, write = os.pipe()
        out = None if limits.verbose else open(log, "ab")  # noqa: SIM115 - closed once the child has it
        try:
            proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(write), *limits.imports_first],
                                    stdin=subprocess.PIPE, stdout=out, stderr=out, pass_fds=(write,), process_group=0,
                                    env={**os.environ, **QUIET_ENV, **thread_environment(limits.threads),
                                         "TMPDIR": tmp})
        except BaseException:
            os.close(read)
            Path(log).unlink(missing_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            os.close(write)
            if out is not None:
                out.close()
        return cls(proc, Connection(read, writable=False), log, _variant(limits), tmp)

    def send(self, stage: Stage, args, kwargs, limits: Limits) -> None:
        """Hand the job over (pickled on stdin): the import path first, since the job may name
        classes only it finds (a test's module)."""
        import pickle

        job = pickle.dumps((stage, args, kwargs, limits, os.getpid()), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            pickle.dump((sys.path, job), self.proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self.proc.stdin.close()
        except BrokenPipeError:  # it died before reading: the EOF on `receiver` says so
            pass

    def end(self) -> None:
        self.receiver.close()
        _kill(self.proc)
        Path(self.log).unlink(missing_ok=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


# A child's log and TMPDIR carry the gateway's pid: a gateway killed outright (SIGKILL, the OOM
# killer) cannot remove them, its children die with it (PR_SET_PDEATHSIG), and the next gateway
# removes what a dead one left (`_sweep`).
_PREFIX = "bridge-stage-"
_STALE = re.compile(rf"^{_PREFIX}(?P<pid>\d+)-[^/]+$")
_SWEPT = threading.Lock()


def _sweep_once() -> None:
    """Start `_sweep` once per process, in the background: it lists the temporary folder."""
    if _SWEPT.acquire(blocking=False):
        threading.Thread(target=_sweep, args=(Path(tempfile.gettempdir()),), name="bridge-sweep", daemon=True).start()


def _sweep(folder: Path) -> list[str]:
    """Remove the stage logs and folders of this user's gateways that no longer run; returns their names."""
    from bridge.base.files import alive

    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            m = _STALE.match(entry.name)
            try:
                if not m or alive(int(m["pid"])) or entry.stat(follow_symlinks=False).st_uid != os.getuid():
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
            except OSError:  # best effort: another gateway swept it first, or it is not ours to remove
                continue
            removed.append(entry.name)
    return sorted(removed)


def _variant(limits: Limits) -> tuple:
    """What a child is started with, and so what a spare must match: its threads, where its output
    goes and what it imports first."""
    return limits.threads, limits.verbose, limits.imports_first


class Spares:
    """Children started before a stage needs them: a fresh interpreter takes 0.15-0.3 s to start
    and import this module, and every stage on a run's critical path paid it (an export, a
    conversion, a parity run: ~0.5 s a run). While `keep` names a variant (`_variant`), one spare
    of it waits idle (~15 MB: nothing but this module imported) and is refilled as soon as a stage
    takes it. A spare is a child like any other: it dies with the gateway (and ends on its own when
    its stdin closes), and `close` kills the idle ones. Executors decide when spares are kept: a
    spare beside a stage that is the run's memory peak (a torch export) would raise the peak.

    Spares are started from one long-lived thread: a child's death signal (PR_SET_PDEATHSIG) fires
    when the *thread* that started it ends, and an executor's threads end with their stage."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._idle: list[_Child] = []
        self._keep: Limits | None = None
        self._expect: list[Limits] = []  # one child each, to start (`expect`)
        self._forgotten: dict[tuple, int] = {}  # variant -> `forget` calls (None: `close`): a child started
        # for `expect` before one of them is ended, not kept
        self._starter: threading.Thread | None = None
        self._armed = False

    def launch(self, limits: Limits) -> None:
        """Start one spare for `limits` now, from the calling thread, which must outlive it (the
        gateway's main thread: its first stage's child boots while the CLI loads)."""
        child = _Child.launch(limits)
        with self._cond:
            self._add(child)

    def _add(self, child: _Child) -> None:
        """Hold `child` idle (lock held); the first one has `close` run at exit."""
        if not self._armed:
            atexit.register(self.close)
            self._armed = True
        self._idle.append(child)

    def keep(self, limits: Limits | None) -> None:
        """Keep a spare for `limits` from now on (None: stop refilling; idle spares stay until `close`)."""
        with self._cond:
            self._keep = limits
            if limits is not None:
                self._start()
            self._cond.notify_all()

    def _start(self) -> None:
        """The spares' thread, once (lock held)."""
        if self._starter is None:
            self._starter = threading.Thread(target=self._start_spares, name="bridge-spares", daemon=True)
            self._starter.start()

    def expect(self, limits: Limits) -> None:
        """Start one child for `limits` now (from the spares' thread, as `keep` does), for a stage
        the caller knows will come: it imports that stage's modules (`Limits.preload`) while
        earlier stages run. It is not refilled once taken, and no other stage's take ends it;
        `forget` does, if no stage took it."""
        with self._cond:
            self._expect.append(limits)
            self._start()
            self._cond.notify_all()

    def forget(self, limits: Limits) -> None:
        """End the expected children for `limits` no stage took, and those not started yet."""
        variant = _variant(limits)
        with self._cond:
            self._expect = [e for e in self._expect if _variant(e) != variant]
            self._forgotten[variant] = self._forgotten.get(variant, 0) + 1
            ended = [c for c in self._idle if c.expected and c.variant == variant]
            self._idle = [c for c in self._idle if c not in ended]
        for child in ended:
            child.end()

    def take(self, limits: Limits) -> _Child | None:
        """An idle spare for `limits`, if one waits; taking it has the next one started."""
        with self._cond:
            for dead in [c for c in self._idle if c.proc.poll() is not None]:
                self._idle.remove(dead)
                dead.end()
            # else a plain one: the job reaches it at once, and the stage imports what it needs
            taken = next((c for c in self._idle if c.variant == _variant(limits)), None) or \
                next((c for c in self._idle if c.variant == _variant(replace(limits, preload=()))), None)
            # A spare that preloads is started for one stage (the export's, before the CLI has
            # planned): any first take that is not it (the export came from the cache) ends it.
            ended = [c for c in self._idle if c is not taken and c.variant[2] and not c.expected]
            self._idle = [c for c in self._idle if c is not taken and c not in ended]
            if taken is not None:
                self._cond.notify_all()
        for child in ended:
            child.end()
        return taken

    def idle(self) -> list[int]:
        """The process ids of the idle spares."""
        with self._cond:
            return [c.proc.pid for c in self._idle]

    def close(self) -> None:
        with self._cond:
            idle, self._idle, self._keep, self._expect = self._idle, [], None, []
            self._forgotten[None] = self._forgotten.get(None, 0) + 1
            self._cond.notify_all()
        for child in idle:
            child.end()

    def _wanted(self) -> Limits | None:
        if self._expect:
            return self._expect[0]
        keep = self._keep
        return keep if keep is not None and not any(c.variant == _variant(keep) for c in self._idle) else None

    def _forgets(self, limits: Limits) -> tuple[int, int]:
        return self._forgotten.get(_variant(limits), 0), self._forgotten.get(None, 0)

    def _start_spares(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._wanted() is not None)
                wanted = self._wanted()
                expected, forgotten = bool(self._expect), self._forgets(wanted)
                if expected:
                    self._expect.pop(0)
            try:
                child = _Child.launch(wanted)
            except OSError:  # no spare is only slower: stop trying
                with self._cond:
                    self._keep = None
                continue
            child.expected = expected
            with self._cond:
                if (expected and forgotten == self._forgets(wanted)) or (
                        not expected and self._keep is not None and _variant(self._keep) == child.variant):
                    self._add(child)
                    continue
            child.end()  # closed meanwhile


SPARES = Spares()


def _kill(proc) -> None:
    """End the child and everything in its process group (a finished child may have left some)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.kill()
    with contextlib.suppress(Exception):
        proc.wait(5)


def _death(stage: str, exitcode: int | None, log_path: str, limits: Limits) -> str:
    if exitcode is not None and exitcode < 0:
        sig = -exitcode
        try:
            sig_name = signal.Signals(sig).name
        except ValueError:
            sig_name = "?"
        how = f"crashed (signal {sig}, {sig_name})"
        if sig == signal.SIGKILL:
            how += "; killed, often for running out of memory"
        elif sig == signal.SIGABRT and limits.max_memory:  # C++ code that cannot allocate aborts
            how += f"; possibly out of memory under --max-memory {limits.max_memory / (1 << 20):.0f} MiB"
    else:
        how = f"exited with code {exitcode} without a result"
    tail = log_tail(log_path)
    return f"stage {stage} {how}" + (f"; last output: {tail}" if tail else "")


def log_tail(path: str, lines: int = 3) -> str:
    try:
        text = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:] if line.strip())[:600]


def _child_entry(fd: int, preload: list[str] = ()) -> None:  # noqa: B006 - never mutated
    """The child's program (`_CHILD`): import `preload`, read the job from stdin, run it, send the
    outcome on `fd`. Preloading happens while the gateway still plans; the stage's record of what
    it read (`bridge.reads`) still covers these modules (it lists every imported module's source)."""
    import pickle
    from multiprocessing.connection import Connection

    os.set_inheritable(fd, False)  # what the stage starts must not hold the result pipe open
    sender = Connection(fd, readable=False)
    _die_with(os.getppid())  # a spare waits here, perhaps for long: it too dies with the gateway
    for module in preload:
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001, S112 - not installed or broken: the stage will say so itself
            continue
    try:
        path, job = pickle.load(sys.stdin.buffer)
    except EOFError:  # a spare never used: the gateway closed its stdin, or ended
        os._exit(0)
    sys.path[:] = path
    stage, args, kwargs, limits, parent = pickle.loads(job)
    _child_main(sender, stage, args, kwargs, limits, parent)


def _child_main(sender, stage: Stage, args, kwargs, limits: Limits, parent: int) -> None:
    _die_with(parent)
    if limits.max_memory:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limits.max_memory, limits.max_memory))
    limits.hit(stage.name)
    if stage.blocked_imports:
        sys.meta_path.insert(0, _Blocked(frozenset(stage.blocked_imports), stage.name))
    recorder = None
    if stage.records_reads:
        from bridge.reads import ReadRecorder

        recorder = ReadRecorder().install()
    try:
        quiet_frameworks()
        module_name, func_name = stage.function.split(":")
        func = importlib.import_module(module_name)
        for part in func_name.split("."):
            func = getattr(func, part)
        result = func(*args, **kwargs)
        message = ("ok", result)
    except BridgeError as e:
        message = ("error", e)
    except BaseException as e:  # noqa: BLE001 - the parent reports it with the stage's name
        sys.stderr.write(traceback.format_exc())
        sys.stderr.flush()
        text = f"{type(e).__name__}: {one_line(str(e)) or type(e).__name__}"
        if _out_of_memory(e):
            limit = f" (--max-memory {limits.max_memory / (1 << 20):.0f} MiB)" if limits.max_memory else ""
            message = ("error", StageCrashed(f"stage {stage.name} ran out of memory{limit}: {text}",
                                             stage=stage.name))
        else:
            message = ("error", text)
    # hashed as the stage leaves them; a failed stage is never cached, so its reads are not hashed
    message = (*message, recorder.files() if recorder and message[0] == "ok" else None)
    try:
        sender.send(message)
    finally:
        sender.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip framework teardown (TensorFlow's can take seconds or crash on exit)


class _Blocked:
    """A meta path finder that makes `blocked` packages look not installed in this child: `import
    torch` raises ModuleNotFoundError, and `"torch" in sys.modules` stays False (a None entry there
    would break libraries that look it up, as scikit-learn's array-API layer does)."""

    def __init__(self, blocked: frozenset[str], stage: str):
        self.blocked, self.stage = blocked, stage

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.blocked:
            raise ModuleNotFoundError(f"No module named {name!r} (stage {self.stage} runs without it)", name=name)
        return None


# What an allocation refused under RLIMIT_AS looks like from Python: numpy and Python raise
# MemoryError; a shared library that cannot be mapped fails its import; C++ code throws bad_alloc.
_OOM_TEXT = ("failed to map segment", "cannot allocate memory", "bad_alloc", "out of memory")


def _out_of_memory(e: BaseException) -> bool:
    return isinstance(e, MemoryError) or any(t in str(e).lower() for t in _OOM_TEXT)


def _die_with(parent: int) -> None:
    """Linux: SIGKILL this child when the gateway dies, so a killed run leaves no stage running."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # the gateway died before the line above
        os._exit(1)


def quiet_frameworks() -> None:
    """Silence TensorFlow/absl chatter that survives the environment variables."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("tensorflow", "absl", "onnx2tf", "tf2onnx", "h5py", "jax", "coremltools"):
        logging.getLogger(name).setLevel(logging.ERROR)
