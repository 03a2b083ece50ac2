"""Run one heavy stage in a fresh child process.

Every export, conversion and inference runs through `run_stage`: the child is spawned (never forked,
so it starts without TensorFlow or torch already imported: the TFLite interpreter only rejects Flex
ops in a process that never imported TensorFlow), quiets framework logging before any import, and
sends back either its result or its exception. A child that dies by a signal, runs out of memory
or outlives its time limit becomes a `StageCrashed` naming the stage; the caller decides whether
that ends one artifact or the whole run.

The child leads its own process group, and the whole group is killed when the stage ends, so
nothing a stage started (worker pools, a converter's helper processes) outlives it; on Linux the
child also dies with the gateway, even when the gateway is killed outright.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import os
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.errors import BridgeError, ConversionError, StageCrashed

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
class Limits:
    timeout: float | None = None  # seconds
    max_memory: int | None = None  # bytes of address space
    verbose: bool = False


def run_stage(stage: str, target: str | Callable, *args: Any, limits: Limits = Limits(), **kwargs: Any) -> Any:
    """Call `target(*args, **kwargs)` in a spawned child and return its result.

    `target` is a function importable by the child (or its "module:function" path). Errors the
    child raises on purpose come back as themselves; anything else becomes a `ConversionError`
    for `stage` with the child's last log lines.
    """
    path = target if isinstance(target, str) else f"{target.__module__}:{target.__qualname__}"
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    with tempfile.NamedTemporaryFile(prefix=f"bridge-{stage}-", suffix=".log", delete=False) as f:
        log_path = f.name
    proc = ctx.Process(
        target=_child_main,
        args=(sender, path, args, kwargs, stage, limits, log_path, os.getpid()),
        name=f"bridge-{stage}",
        daemon=True,
    )
    try:
        proc.start()
        sender.close()
        if not receiver.poll(limits.timeout):
            raise StageCrashed(f"stage {stage} timed out after {limits.timeout:g} s", stage=stage)
        try:
            status, payload = receiver.recv()
        except EOFError:
            proc.join()
            raise StageCrashed(_death(stage, proc.exitcode, log_path, limits), stage=stage) from None
        proc.join()
        if status == "ok":
            return payload
        if isinstance(payload, BridgeError):
            if isinstance(payload, ConversionError) and not payload.stage:
                payload.stage = stage
            raise payload
        raise ConversionError(str(payload), stage=stage)
    finally:
        receiver.close()
        _kill(proc)
        Path(log_path).unlink(missing_ok=True)


def _kill(proc) -> None:
    """End the child and everything in its process group (a finished child may have left some)."""
    if proc.pid is None:  # never started
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # the group exists only once the child has made it
    if proc.is_alive():
        proc.kill()
    proc.join(5)


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


_STAGE: str | None = None  # set in a stage's child process


def in_stage() -> str | None:
    """The stage this process runs, in a child started by `run_stage`; None elsewhere."""
    return _STAGE


def _child_main(sender, path: str, args, kwargs, stage: str, limits: Limits, log_path: str,
                parent: int) -> None:
    os.setpgid(0, 0)
    _die_with(parent)
    os.environ.update(QUIET_ENV)
    if not limits.verbose:
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    if limits.max_memory:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limits.max_memory, limits.max_memory))
    crash_hook(stage)
    global _STAGE
    _STAGE = stage
    try:
        quiet_frameworks()
        module_name, func_name = path.split(":")
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
        text = f"{type(e).__name__}: {_first_line(e)}"
        if _out_of_memory(e):
            limit = f" (--max-memory {limits.max_memory / (1 << 20):.0f} MiB)" if limits.max_memory else ""
            message = ("error", ConversionError(f"stage {stage} ran out of memory{limit}: {text}", stage=stage))
        else:
            message = ("error", text)
    try:
        sender.send(message)
    finally:
        sender.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip framework teardown (TensorFlow's can take seconds or crash on exit)


# What an allocation refused under RLIMIT_AS looks like from Python: numpy and Python raise
# MemoryError; a shared library that cannot be mapped fails its import; C++ code throws bad_alloc.
_OOM_TEXT = ("failed to map segment", "cannot allocate memory", "bad_alloc", "out of memory")


def _out_of_memory(e: BaseException) -> bool:
    return isinstance(e, MemoryError) or any(t in str(e).lower() for t in _OOM_TEXT)


def _first_line(e: BaseException) -> str:
    """The message on one line: some (torch's state-dict errors) put the substance on line two."""
    text = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
    return text[:500] if text else type(e).__name__


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


def crash_hook(point: str) -> None:
    """`BRIDGE_TEST_CRASH=point[:how]` makes that point misbehave, for the crash tests.

    A point is a stage name (the hook runs in the stage's child before it imports anything) or
    `place` / `place-swap` in the gateway itself (`bridge.files.place`, before anything is replaced
    and between moving an old folder aside and moving the new one in). `how` is `segv` (default),
    `abort`, `hang` (saying on stderr where, so tests can kill the gateway there) or `hang-tree`
    (a hang that first starts a process of its own, as converters' worker pools do, so tests can
    check that nothing a stage started outlives its timeout).
    """
    spec = os.environ.get("BRIDGE_TEST_CRASH", "")
    if not spec:
        return
    name, _, how = spec.partition(":")
    if name != point:
        return
    if how in ("", "segv"):
        os.kill(os.getpid(), signal.SIGSEGV)
    elif how == "abort":
        os.abort()
    elif how in ("hang", "hang-tree"):
        import subprocess
        import time

        if how == "hang-tree":
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(10**6)"])
        sys.stderr.write(f"BRIDGE_TEST_CRASH: hanging at {point}\n")
        sys.stderr.flush()
        time.sleep(10**6)


def quiet_frameworks() -> None:
    """Silence TensorFlow/absl chatter that survives the environment variables."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("tensorflow", "absl", "onnx2tf", "tf2onnx", "h5py", "jax", "coremltools"):
        logging.getLogger(name).setLevel(logging.ERROR)
