"""`bridge batch MATRIX.toml`: a zoo of models, each converted exactly as `bridge convert` converts
it, into `--out/<name>/`, with one summary.

The matrix names models and what each needs; every `bridge convert` option can be said per model,
with shared `[defaults]`:

    [defaults]
    targets = ["onnx", "tflite", "coreml"]
    quantize = ["tflite=fp32,fp16", "coreml=fp16"]

    [[model]]
    name = "detector"
    source = "models/det.onnx"
    input = ["x:1,3,320,320"]

Keys are the option names of `bridge convert` without their dashes (`parity-data`, `max-memory`,
`coreml-target`; `_` may stand for `-`, and `targets` for `target`); relative paths are relative to
the matrix file. Every model is planned (and every output folder locked and checked) before any
stage runs, so a mistake anywhere in the matrix is exit 2 with nothing done. Then the models run
side by side through one executor, one model failing never stops another, and the exit code is
the worst of the models'.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import threading
import time
import tomllib
import typing
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from bridge.base.errors import BridgeError, UsageError, one_line
from bridge.base.samples import CalibrationOptions
from bridge.cache import StageCache
from bridge.conversion import ConvertOptions, Plan, plan, run
from bridge.executors import Executor
from bridge.lanes import lanes
from bridge.options import DEFAULT_TIMEOUT
from bridge.progress import BatchProgress, Progress
from bridge.publish import OutputFolder
from bridge.report import Report

SCHEMA = "bridge.batch/1"
SUMMARY = "summary.json"
# What the batch writes beside the model folders (`bridge.reporters.summary`); no model may be called so.
RESERVED = frozenset({SUMMARY, "summary.html", "junit.xml"})
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")

# Matrix key -> how its value becomes a `ConvertOptions` field. Lane option keys are added from the
# installed lanes (`_lane_keys`).
_LISTS = {"target": "targets", "quantize": "quantize", "input": "inputs", "dynamic": "dynamic",
          "threshold": "thresholds"}
_ALIASES = {"targets": "target", "inputs": "input", "thresholds": "threshold"}
_SCALARS = ("calibration", "parity-data", "mean", "std", "resize", "samples", "seed", "trust-code", "timeout",
            "max-memory", "search-budget")


@dataclass(frozen=True)
class Model:
    name: str
    source: str
    options: ConvertOptions


def read_matrix(path: Path, out: Path) -> list[Model]:
    """The models of a matrix file, their options checked as `bridge convert` checks them."""
    where = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{where}: no such matrix file") from None
    except IsADirectoryError:
        raise UsageError(f"{where}: a folder, not a matrix file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{where}: cannot read the matrix file ({one_line(e, with_type=True)})") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{where}: not valid TOML ({one_line(e)})") from None
    unknown = set(data) - {"defaults", "model"}
    if unknown:
        raise UsageError(f"{where}: unknown table {sorted(unknown)[0]!r} (a matrix has [defaults] and [[model]])")
    defaults = data.get("defaults", {})
    entries = data.get("model", [])
    if not isinstance(defaults, dict):
        raise UsageError(f"{where}: defaults must be a table ([defaults])")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise UsageError(f"{where}: model must be an array of tables ([[model]])")
    if not entries:
        raise UsageError(f"{where}: no [[model]] in the matrix")
    base = path.resolve().parent
    shared = _keys(defaults, f"{where}: [defaults]", allow_model=False)
    models, seen = [], {}
    for i, entry in enumerate(entries, 1):
        name = entry.get("name")
        label = f"{where}: model {name!r}" if isinstance(name, str) else f"{where}: model #{i}"
        if not isinstance(name, str):
            raise UsageError(f"{label}: needs a name (name = \"...\": its output folder)")
        if not _NAME.fullmatch(name) or name.lower() in RESERVED or name.startswith("."):
            raise UsageError(f"{label}: the name must be a plain folder name (letters, digits, '.', '_', '-', "
                             "starting with a letter or digit, at most 100 characters) and not "
                             f"{', '.join(sorted(RESERVED))}")
        if name.lower() in seen:
            raise UsageError(f"{label}: the name is used twice (also model #{seen[name.lower()]}); each model needs "
                             "its own output folder")
        seen[name.lower()] = i
        own = _keys(entry, label, allow_model=True)
        if "source" not in own:
            raise UsageError(f"{label}: needs a source (a model file or file.py:callable)")
        values = {**shared, **own}
        values.pop("name")
        models.append(Model(name, _source(values.pop("source"), base),
                            _options(values, base, out / name, label)))
    return models


def _keys(table: dict, label: str, *, allow_model: bool) -> dict[str, Any]:
    known = {*_LISTS, *_SCALARS, *_lane_keys()}
    out = {}
    for raw, value in table.items():
        key = raw.replace("_", "-")
        key = _ALIASES.get(key, key)
        if key in ("name", "source") and allow_model:
            if not isinstance(value, str) or not value:
                raise UsageError(f"{label}: {raw} must be a non-empty string")
            out[key] = value
            continue
        if key not in known:
            hint = " (name and source belong in each [[model]])" if key in ("name", "source") else ""
            raise UsageError(f"{label}: unknown key {raw!r}{hint}; valid keys: {', '.join(sorted(known))}")
        if key in out:
            raise UsageError(f"{label}: {raw!r} is given twice")
        out[key] = value
    return out


def _lane_keys() -> dict[str, tuple[str, dataclasses.Field, Any]]:
    """`coreml-target` -> (lane, field, type) for every installed lane's options."""
    from bridge.plan import flag

    found = {}
    for lane in lanes().values():
        if lane.options is None:
            continue
        hints = typing.get_type_hints(lane.options)
        for f in dataclasses.fields(lane.options):
            found[flag(lane, f).lstrip("-")] = (lane.name, f, hints[f.name])
    return found


def _source(text: str, base: Path) -> str:
    """A source path relative to the matrix file; a `file.py:callable` likewise; a module
    entrypoint (`package.module:callable`) as it is."""
    if os.path.isabs(text) or (base / text).exists():
        return str(base / text)
    target, sep, attr = text.rpartition(":")
    if sep and target.endswith(".py"):
        return f"{base / target}:{attr}"
    return text


def _options(values: dict[str, Any], base: Path, out: Path, label: str) -> ConvertOptions:
    lane_keys = _lane_keys()
    fields: dict[str, Any] = {"out": str(out)}
    calibration: dict[str, Any] = {}
    lane_values: dict[str, dict] = {}
    for key, value in values.items():
        what = f"{label}: {key} = {value!r}"
        if key in _LISTS:
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
                raise UsageError(f"{what}: expected a string or a list of strings")
            fields[_LISTS[key]] = tuple(items)
        elif key in ("calibration", "parity-data"):
            calibration["path" if key == "calibration" else "parity_path"] = str(base / _string(value, what))
        elif key in ("mean", "std"):
            calibration[key] = _floats(value, what)
        elif key == "resize":
            calibration["resize"] = _resize(value, what)
        elif key in ("samples", "seed"):
            fields[key] = _typed(value, int, what)
        elif key == "trust-code":
            fields["trust_code"] = _typed(value, bool, what)
        elif key == "timeout":
            fields["timeout"] = float(_typed(value, (int, float), what))
        elif key == "search-budget":
            fields["search_budget"] = float(_typed(value, (int, float), what))
        elif key == "max-memory":
            fields["max_memory"] = _memory(value, what)
        else:
            lane, f, hint = lane_keys[key]
            lane_values.setdefault(lane, {})[f.name] = _lane_value(value, hint, what)
    try:
        return ConvertOptions(calibration=CalibrationOptions(**calibration), lanes=lane_values,
                              **{"timeout": DEFAULT_TIMEOUT, **fields})
    except UsageError as e:
        raise UsageError(f"{label}: {e}") from None


def _string(value, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise UsageError(f"{what}: expected a path")
    return value


def _typed(value, kind, what: str):
    if isinstance(value, bool) and kind is not bool:
        raise UsageError(f"{what}: expected a number")
    if not isinstance(value, kind):
        names = {bool: "true or false", int: "a whole number"}.get(kind, "a number")
        raise UsageError(f"{what}: expected {names}")
    return value


def _floats(value, what: str) -> tuple[float, ...]:
    from bridge.options import floats

    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value),)
    if isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return tuple(float(v) for v in value)
    if isinstance(value, str):
        return floats(value, what.split(" = ")[0].split(": ")[-1])
    raise UsageError(f"{what}: expected a number, a list of numbers or \"0.485,0.456,0.406\"")


def _resize(value, what: str) -> tuple[int, int]:
    from bridge.options import size

    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                           for v in value):
        return value[0], value[1]
    if isinstance(value, str):
        return size(value)
    raise UsageError(f"{what}: expected \"HxW\" or [H, W]")


def _memory(value, what: str) -> int:
    from bridge.options import memory

    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        return memory(value)
    raise UsageError(f"{what}: expected a size such as \"8G\"")


def _lane_value(value, hint, what: str):
    kinds = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    kind = kinds[0]
    if isinstance(kind, type) and issubclass(kind, Enum):
        try:
            return kind(value)
        except ValueError:
            raise UsageError(f"{what}: expected one of {', '.join(str(m.value) for m in kind)}") from None
    return _typed(value, kind, what)


# --- running ---------------------------------------------------------------------------------------

@dataclass
class ModelResult:
    name: str
    source: str
    exit_code: int
    report: Report | None = None
    error: str | None = None  # what stopped the model before it had a report
    seconds: float = 0.0

    def to_json(self, out: Path) -> dict:
        rep = self.report
        runs = rep.stage_runs if rep is not None else []
        return {
            "name": self.name,
            "source": self.source,
            "exit_code": self.exit_code,
            "passed": self.exit_code == 0,
            "report": os.path.relpath(rep.path, out) if rep is not None and rep.path else None,
            "error": self.error,
            "seconds": round(self.seconds, 3),
            "stages": {"ran": sum(r["cache"] != "reused" for r in runs),
                       "reused": sum(r["cache"] == "reused" for r in runs)},
            "artifacts": [{"target": a.target, "quantization": a.quantization, "path": a.path, "bytes": a.bytes,
                           "sha256": a.sha256, "exit_code": a.exit_code,
                           "status": "error" if a.error else a.parity.status if a.parity else "not_executed"}
                          for a in (rep.artifacts if rep is not None else [])],
        }


@dataclass
class Summary:
    matrix: str
    out: Path
    executor: dict
    models: list[ModelResult] = field(default_factory=list)
    seconds: float = 0.0
    path: Path | None = None  # where summary.json was written

    @property
    def exit_code(self) -> int:
        """The worst model's: 3 a conversion failed, 2 a model's input was unusable, 1 parity."""
        return max((m.exit_code for m in self.models), default=0)

    def to_json(self) -> dict:
        return {"schema": SCHEMA, "passed": self.exit_code == 0, "exit_code": self.exit_code, "matrix": self.matrix,
                "executor": self.executor, "seconds": round(self.seconds, 3),
                "counts": {"models": len(self.models), "passed": sum(m.exit_code == 0 for m in self.models),
                           "failed": sum(m.exit_code != 0 for m in self.models)},
                "models": [m.to_json(self.out) for m in self.models]}


def plan_models(models: list[Model]) -> list[Plan]:
    """Every model checked as `bridge convert` checks its arguments; nothing runs."""
    plans = []
    for m in models:
        try:
            plans.append(plan(m.source, m.options))
        except UsageError as e:
            raise UsageError(f"model {m.name!r}: {e}") from None
    return plans


# Each model starts once the one before it waits on a stage, has run this long, or has ended. A
# model the cache answers whole is 15-30 ms of Python (hundreds of small file operations, each giving
# the GIL up and waiting to get it back): four at once took longer than one after another (test zoo,
# warm, medians of 11: 0.348 s against 0.318 s). A cold model waits on its export within ms, so a
# cold batch still starts its models together; one judging in-process lets the next start after this.
STAGGER = 0.05


def run_batch(matrix: Path, models: list[Model], plans: list[Plan], out: Path, *, executor: Executor,
              cache: StageCache | None, progress: BatchProgress | None = None,
              command_line: list[str] | None = None) -> Summary:
    """Lock every output folder and check what it would replace, then run every model through
    `executor`; write the summary."""
    from bridge.reporters.summary import write_summary

    progress = progress or BatchProgress()
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        made = [f for f in (out, *(p.out.path for p in plans)) if not os.path.lexists(f)]
        try:
            _lock_all(stack, out, models, plans, executor)
        except BaseException:  # refused before anything ran: leave no empty folder behind
            stack.close()
            for folder in reversed(made):
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise
        summary = Summary(str(matrix), out, executor.describe())
        results: dict[str, ModelResult] = {}
        busy = [threading.Event() for _ in models]
        threads = [threading.Thread(target=_one, args=(m, p, executor, cache, progress, results, command_line, b),
                                    daemon=True, name=f"bridge-model-{m.name}")
                   for m, p, b in zip(models, plans, busy, strict=True)]
        for t, b in zip(threads, busy, strict=True):
            t.start()
            b.wait(STAGGER)
        for t in threads:
            while t.is_alive():  # short waits, so Ctrl-C reaches this thread
                t.join(0.2)
        summary.models = [results[m.name] for m in models]
        summary.seconds = time.perf_counter() - start
        write_summary(summary, out, cache.pages if cache is not None else None)
    return summary


def _lock_all(stack: contextlib.ExitStack, out: Path, models: list[Model], plans: list[Plan],
              executor: Executor) -> None:
    """The batch's folder and every model's, locked for the whole batch; what each would replace
    checked; on a cluster, every node must see the files."""
    from bridge.reporters.summary import check_destinations

    stack.enter_context(OutputFolder(out, frozenset()))
    check_destinations(out)
    for m, p in zip(models, plans, strict=True):
        try:
            stack.enter_context(p.out)
            p.check_destinations()
        except UsageError as e:
            raise UsageError(f"model {m.name!r}: {e}") from None
    check = getattr(executor, "check_shared", None)
    if check is not None:  # a cluster: every node must see what the stages read and write
        check(out, [Path(os.getcwd()), *(path for p in plans for path in p.inputs if path is not None)])


def _one(model: Model, planned: Plan, executor: Executor, cache: StageCache | None, progress: BatchProgress,
         results: dict[str, ModelResult], command_line: list[str] | None, busy: threading.Event) -> None:
    """One model, start to publish; whatever stops it is its own result. `busy` is set once the
    model waits on its first stage, and when it ends (`STAGGER`)."""
    start = time.perf_counter()
    progress.started(model.name)
    try:
        report = run(planned, _Waits(progress.model(model.name), busy), command_line=command_line, cache=cache,
                     executor=executor)
        result = ModelResult(model.name, model.source, report.exit_code, report)
    except BridgeError as e:
        result = ModelResult(model.name, model.source, e.exit_code, error=one_line(str(e)))
    except Exception as e:  # noqa: BLE001 - a bug met by one model must not stop the others; it is named
        result = ModelResult(model.name, model.source, 3, error=f"internal error: {type(e).__name__}: {one_line(e)}")
    result.seconds = time.perf_counter() - start
    results[model.name] = result
    busy.set()
    progress.finished(model.name, result)


class _Waits(Progress):
    """A model's progress, passed on, that tells `busy` when the model's first stage begins: from
    then on it mostly waits."""

    def __init__(self, inner: Progress, busy: threading.Event):
        self.inner, self.busy = inner, busy

    @contextlib.contextmanager
    def step(self, text: str):
        self.busy.set()
        with self.inner.step(text):
            yield

    def note(self, text: str) -> None:
        self.inner.note(text)

    def reused(self, text: str) -> None:
        self.inner.reused(text)
