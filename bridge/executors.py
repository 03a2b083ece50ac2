"""Where stages run. A stage is the unit of work: an export, one lane's conversion, one runtime's
parity run, each in its own child process (`bridge.stages`), whichever executor starts it.

- `Inline`: one after another, in the caller's thread (`bridge convert` on one core).
- `Local`: up to `jobs` at once on this machine, and no more at once than the memory the stages
  are expected to need (`Needs`) fits in; first come, first served, so a large stage waits for
  room rather than being overtaken forever. `bridge convert` runs two at once where two cores
  are (`for_one_model`).
- `Ray`: Ray tasks that ask for one CPU and the stage's memory, on a local Ray instance or an
  existing cluster (`--ray-address`). The task calls the same `call_stage`, so a crash, a time-out
  or a blocked import behaves as it does locally. Sources, samples and artifacts are files: every
  node must see the paths the gateway sees (a shared filesystem), which `check_shared` proves
  before anything runs.

Results travel back as `Outcome`s (small: arrays stay in files).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path

from bridge.base.errors import StageCrashed, UsageError, one_line
from bridge.stages import SPARES, Limits, Outcome, Stage, call_stage

GiB = 1 << 30


@dataclass(frozen=True)
class Needs:
    """What a stage is expected to take at its peak."""

    memory: int  # bytes
    cpus: float = 1.0
    preload: tuple[str, ...] = ()  # modules its child may import before its job arrives


class Executor:
    parallel = False  # may one model's lanes run at the same time?

    def submit(self, stage: Stage, args: tuple, kwargs: dict, limits: Limits, needs: Needs) -> Future:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def bound(self, memory: int) -> None:
        """From now on, no more at once than `memory` bytes of expected need (one stage still
        runs, whatever it needs)."""

    def describe(self) -> dict:
        return {"executor": "inline"}

    def spares(self, limits: Limits | None) -> None:
        """Keep a started child waiting for the next stage run with `limits` (`bridge.stages.Spares`),
        or stop (None). Only executors whose stages start as children here keep any."""

    def expect(self, limits: Limits, needs: Needs) -> None:
        """Start the child a stage submitted later with `limits` and `needs` will run in, now, so
        it imports `needs.preload` while earlier stages run (`bridge.stages.Spares.expect`)."""

    def forget(self, limits: Limits, needs: Needs) -> None:
        """End the children `expect` started for `limits` and `needs` that no stage took."""


class Inline(Executor):
    def submit(self, stage, args, kwargs, limits, needs) -> Future:
        future: Future = Future()
        future.set_result(call_stage(stage, *args, limits=replace(limits, preload=needs.preload), **kwargs))
        return future


def prestart(verbose: bool, preload: tuple[str, ...] = (), max_memory: int | None = None) -> None:
    """Start the child `for_one_model`'s executor will run a run's first stage in (the export),
    while the gateway still loads and plans (~0.2 s of a run's critical path), importing `preload`
    meanwhile (the export's frameworks, `bridge.base.sources.export_modules`); once per run: a
    second call finds it waiting."""
    if SPARES.idle():
        return
    limits = Limits(verbose=verbose, max_memory=max_memory)  # a memory limit: nothing preloaded
    need = Needs(memory=0, preload=preload)
    SPARES.launch(allot(limits, need) if _cpus() >= 2 else replace(limits, preload=preload))


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def for_one_model() -> Executor:
    """`bridge convert`'s: stages that do not depend on each other (a lane's conversion and the
    hub's runs) side by side where there are two cores, within the memory available (`Local`);
    one after another on one core."""
    return Local(2) if _cpus() >= 2 else Inline()


class Local(Executor):
    """`jobs` stages at once, within a memory budget (default: the memory available at start)."""

    parallel = True

    def __init__(self, jobs: int, memory: int | None = None):
        if jobs < 1:
            raise UsageError(f"--jobs {jobs}: expected 1 or more")
        self.jobs = jobs
        self.memory = memory or available_memory()
        self._cond = threading.Condition()
        self._queue: deque[tuple[Future, Callable[[], Outcome], int]] = deque()
        self._running = 0
        self._used = 0

    def describe(self) -> dict:
        return {"executor": "local", "jobs": self.jobs, "memory": self.memory}

    def spares(self, limits: Limits | None) -> None:
        SPARES.keep(None if limits is None else allot(limits, Needs(memory=0)))

    def expect(self, limits: Limits, needs: Needs) -> None:
        SPARES.expect(allot(limits, needs))

    def forget(self, limits: Limits, needs: Needs) -> None:
        SPARES.forget(allot(limits, needs))

    def close(self) -> None:
        SPARES.close()

    def bound(self, memory: int) -> None:
        with self._cond:
            self.memory = min(self.memory, memory)

    def submit(self, stage, args, kwargs, limits, needs) -> Future:
        future: Future = Future()
        need = min(needs.memory, self.memory)  # the largest stage still runs, alone
        limits = allot(limits, needs)
        with self._cond:
            self._queue.append((future, lambda: call_stage(stage, *args, limits=limits, **kwargs), need))
            self._dispatch()
        return future

    def _dispatch(self) -> None:
        """Start queued stages in order while a slot and their memory are free (lock held)."""
        while self._queue and self._running < self.jobs and (
                self._running == 0 or self._used + self._queue[0][2] <= self.memory):
            future, work, need = self._queue.popleft()
            self._running += 1
            self._used += need
            threading.Thread(target=self._run, args=(future, work, need), daemon=True).start()

    def _run(self, future: Future, work: Callable[[], Outcome], need: int) -> None:
        try:
            future.set_result(work())
        except BaseException as e:  # noqa: BLE001 - handed to whoever waits on the future
            future.set_exception(e)
        finally:
            with self._cond:
                self._running -= 1
                self._used -= need
                self._dispatch()


def allot(limits: Limits, needs: Needs) -> Limits:
    """A stage run beside others uses the CPUs it asked for, as threads (`bridge.base.cpus`), and
    its child imports what it is expected to (`Needs.preload`)."""
    return replace(limits, threads=limits.threads or max(1, round(needs.cpus)), preload=needs.preload)


def available_memory() -> int:
    """MemAvailable from /proc/meminfo; elsewhere, 8 GiB."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 8 * GiB


class Ray(Executor):
    """Stages as Ray tasks. Without an address, a local instance with `jobs` CPUs is started (and
    stopped at the end); with one, the driver joins that cluster."""

    parallel = True

    def __init__(self, address: str | None = None, jobs: int | None = None):
        from bridge.base.lazy import require

        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # Ray would otherwise report usage online
        self.ray = require("ray")
        self.address = address
        # A local instance keeps its session (logs, sockets: ~200 KB) in a folder of its own that
        # `close` deletes; in Ray's default, /tmp/ray, every batch left one behind.
        self._temp = None if address else tempfile.mkdtemp(prefix="bridge-ray-", dir=_short_temp())
        options = {"log_to_driver": False, "logging_level": "ERROR", "configure_logging": True}
        try:
            if address:
                self.ray.init(address=address, **options)
            else:
                self.ray.init(address="local", num_cpus=jobs or os.cpu_count() or 1, include_dashboard=False,
                              _node_ip_address="127.0.0.1", _temp_dir=self._temp, **options)
        except Exception as e:  # noqa: BLE001 - Ray's start-up errors are many; each is one line here
            self._remove_temp()
            what = f"join {address}" if address else "start a local Ray instance"
            raise UsageError(f"--executor ray: could not {what} ({one_line(e, with_type=True)})") from None
        nodes = [n for n in self.ray.nodes() if n.get("Alive")]
        self.nodes = [n["NodeID"] for n in nodes]
        self.memory = max((int(n["Resources"].get("memory", 0)) for n in nodes), default=0) or None
        self._task = self.ray.remote(_ray_stage)
        self._cwd = os.getcwd()
        self._path = [self._cwd if p == "" else p for p in sys.path]

    def describe(self) -> dict:
        return {"executor": "ray", "address": self.address or "local", "nodes": len(self.nodes)}

    def submit(self, stage, args, kwargs, limits, needs) -> Future:
        need = min(needs.memory, self.memory) if self.memory else needs.memory
        limits = allot(limits, needs)
        ref = self._task.options(num_cpus=needs.cpus, memory=need, max_retries=0, name=f"bridge-{stage.name}").remote(
            stage, args, kwargs, limits, self._cwd, self._path)
        future: Future = Future()

        def done(f: Future) -> None:
            try:
                future.set_result(f.result())
            except Exception as e:  # noqa: BLE001 - Ray lost the task (a node died, a worker crashed)
                future.set_result(Outcome(error=StageCrashed(f"stage {stage.name} was lost by Ray: "
                                                             f"{one_line(e, with_type=True)}", stage=stage.name),
                                          deliberate=False))

        ref.future().add_done_callback(done)
        return future

    def check_shared(self, folder: Path, paths: Sequence[Path]) -> None:
        """Every node must see `folder` (a token written here is read there) and every path in
        `paths`, at the same absolute paths: the batch moves files, not bytes."""
        token = secrets.token_hex(16)
        probe = Path(os.path.abspath(folder)) / f".bridge-probe-{os.getpid()}-{token[:8]}"
        paths = [os.path.abspath(p) for p in paths]
        probe.write_text(token)
        try:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            check = self.ray.remote(_see)
            refs = [check.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
                    .remote(str(probe), token, paths) for node in self.nodes]
            for node, missing in zip(self.nodes, self.ray.get(refs, timeout=300), strict=True):
                if missing:
                    raise UsageError(f"--executor ray: node {node[:12]} cannot see {missing} at the path this machine "
                                     "uses; a batch on a cluster needs its sources, --out and calibration data on a "
                                     "filesystem every node mounts at the same path")
        finally:
            probe.unlink(missing_ok=True)

    def close(self) -> None:
        self.ray.shutdown()
        self._remove_temp()

    def _remove_temp(self) -> None:
        if self._temp is not None:
            shutil.rmtree(self._temp, ignore_errors=True)


def _short_temp() -> str:
    """The temporary folder, or /tmp where its path is too long for Ray's sockets: they live at
    <folder>/bridge-ray-XXXXXXXX/session_<date>_<pid>/sockets/plasma_store, and a Unix socket's
    path has at most 107 bytes (a pytest tmp_path as TMPDIR passed it)."""
    folder = tempfile.gettempdir()
    return folder if len(folder) <= 20 or not os.path.isdir("/tmp") else "/tmp"


def _ray_stage(stage: Stage, args: tuple, kwargs: dict, limits: Limits, cwd: str, path: list[str]) -> Outcome:
    """A stage inside a Ray worker: in the gateway's folder, with its import path (a module
    entrypoint resolves as it would locally), then the usual child process."""
    with contextlib.suppress(OSError):
        os.chdir(cwd)
    sys.path[:0] = [p for p in path if p not in sys.path]
    return call_stage(stage, *args, limits=limits, **kwargs)


def _see(probe: str, token: str, paths: list[str]) -> str | None:
    try:
        if Path(probe).read_text() != token:
            return str(Path(probe).parent)
    except OSError:
        return str(Path(probe).parent)
    for p in paths:
        if not os.path.exists(p):
            return p
    return None
