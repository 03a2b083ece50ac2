"""`bridge convert`: source -> ONNX hub -> target lanes -> runners -> comparison -> report.

The orchestrator knows lanes only through their declarations (`bridge.base.lane.Lane`): it plans
routes from their mode tables, runs their stages by the paths they declare, and judges their
artifacts with the thresholds they declare. Nothing here names a target.
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bridge import environment
from bridge.base.arrays import Column, Feeds
from bridge.base.bindings import IO
from bridge.base.errors import BridgeError, ConversionError, ErrorRecord, UsageError
from bridge.base.files import scratch, sha256, size
from bridge.base.lane import ExportRequest, ExportResult, Lane, LaneArtifact, LaneRequest
from bridge.base.numerics import Ranges
from bridge.base.samples import CalibrationOptions
from bridge.base.sources import Format, SourceRef, export_modules, sniff
from bridge.base.tensors import parse_dynamic, parse_input, second_size
from bridge.cache import Digests, StageCache, package_digest
from bridge.executors import Executor, GiB, Needs, for_one_model
from bridge.lanes import lanes
from bridge.localization import Localizer, When
from bridge.numerics import FP16Artifact, flat_outputs, fp16_warnings, nonfinite_warning
from bridge.options import DEFAULT_TIMEOUT, SEARCH_BUDGET, check_limits, check_normalization, check_search_budget
from bridge.parity import floor_json, judge, noise_floor, not_executed, runtime_failed, stage_metrics
from bridge.plan import Route, lane_options, parse_threshold, plan_routes, thresholds_for
from bridge.progress import Progress
from bridge.publish import STAGED, OutputFolder, check_report_destination
from bridge.reads import ABSENT, read_digest
from bridge.report import ArtifactRecord, Report
from bridge.reporters import html, plots
from bridge.reporters.junit import JUnitReporter
from bridge.stages import Fault, Limits, Outcome, Stage

# The export records the files it reads: for a Python entrypoint they are known only once it ran,
# and the stage cache keys on their content (`bridge.cache`).
EXPORT = Stage("export", "bridge.converters.onnx.export:export_source", records_reads=True)
RANGES = Stage("activation-ranges", "bridge.converters.onnx.ranges:measure")
MEASURED_RUN = Stage("onnx-runtime", "bridge.converters.onnx.ranges:run_and_measure")
SENSITIVITY = Stage("sensitivity", "bridge.converters.onnx.sensitivity:rank")
# calibration samples the mixed-precision search ranks layers on: the int8 ranking's localisation
# runs on them, and 2 keep it within the budget on PP-OCRv4 det at 480x640
RANK_SAMPLES = 2
# layers (the worst on their own first) whose isolated error the int8 ranking carries to the outputs:
# a count, not a time, so the same model and data rank the same way on a busy machine
RANK_CARRIED = 128
HUB_RUNNER = "bridge.validators.runners.onnxruntime:OnnxRuntimeRunner"

# What a stage is expected to peak at, for the executors that run several at once (`--jobs`, Ray):
# the frameworks it imports, plus a multiple of the model's bytes (the source file before the
# export, the hub after). Rough on purpose: enough to keep two TensorFlow conversions of a large
# model from starting together on a machine that holds one.
# An ONNX source is exported without torch or TensorFlow (child's peak RSS measured: ResNet50, 102
# MB, 890 MiB; all-MiniLM-L6-v2, 90 MB, 846 MiB; PP-OCRv4 det, 4.7 MB at 480x640, 426 MiB: its
# imports and the source's session weigh more than 8x a small file).
MEMORY = {"export": (3 * GiB // 2, 6.0), "export-onnx": (448 << 20, 5.0), "activation-ranges": (GiB // 2, 4.0),
          "convert": (2 * GiB, 8.0), "runtime": (GiB // 2, 3.0),
          "localize": (GiB, 12.0)}


# The activation-ranges probe (`converters/onnx/ranges.py`) holds every float tensor of a sample at
# once: its imports, 4.5x the hub's bytes (the loaded model, its serialization, onnxruntime's copy)
# and 2.5x the activations' (onnxruntime's outputs and their arrays). Measured child peaks (MiB):
# ResNet50 672 (estimate 790), PP-OCRv4 det 480x640 1193 (1304; the size-only rule said 530),
# all-MiniLM-L6-v2 487 (528), a MobileNetV2 at 96x96 94 (124).
PROBE_MEMORY = (100 << 20, 4.5, 2.5)


class _StageFailed(Exception):
    """Raised through a progress step whose stage returned an error, so the step is not shown as done."""


def needs(kind: str, model_bytes: int, limits: Limits, declared: tuple[int, float] | None = None) -> Needs:
    base, per_byte = declared or MEMORY[kind]
    return _capped(int(base + per_byte * model_bytes), limits)


def probe_needs(hub_bytes: int, activation_bytes: int | None, limits: Limits) -> Needs:
    """The activation-ranges stages' memory (`PROBE_MEMORY`); by the file's size alone when the
    hub's activations are not known (a dynamic axis)."""
    if activation_bytes is None:
        return needs("activation-ranges", hub_bytes, limits)
    base, per_byte, per_activation = PROBE_MEMORY
    return _capped(int(base + per_byte * hub_bytes + per_activation * activation_bytes), limits)


def _capped(memory: int, limits: Limits) -> Needs:
    """An expected peak, never above the run's --max-memory (a stage's limit is its share of it)."""
    return Needs(memory=min(memory, limits.max_memory) if limits.max_memory else memory)


@dataclass(frozen=True)
class ConvertOptions:
    targets: tuple[str, ...] = ("onnx", "tflite")
    quantize: tuple[str, ...] = ()  # TARGET=MODE[,MODE...]
    inputs: tuple[str, ...] = ()  # NAME:D0,D1,...[:DTYPE]
    dynamic: tuple[str, ...] = ()  # NAME:AXIS
    thresholds: tuple[str, ...] = ()  # [MODE@][OUTPUT:]METRIC=VALUE
    calibration: CalibrationOptions = field(default_factory=CalibrationOptions)
    out: str | None = None
    samples: int = 8
    seed: int = 0
    lanes: Mapping[str, object] = field(default_factory=dict)  # lane name -> its options (dataclass or dict)
    trust_code: bool = False
    timeout: float | None = DEFAULT_TIMEOUT
    max_memory: int | None = None
    verbose: bool = False
    external_data_bytes: int | None = None  # hubs past this keep their tensors in <name>.onnx.data (default ~2 GB)
    junit: str | None = None  # also write the verdicts as JUnit XML here (report.json and report.html are in `out`)
    localize: bool = True  # localise the first divergent layer of every artifact that fails parity
    search_budget: float = SEARCH_BUDGET  # a mixed mode's search: at most this many times the plain mode's time

    def __post_init__(self):
        check_limits(timeout=self.timeout, max_memory=self.max_memory, samples=self.samples, seed=self.seed)
        check_search_budget(self.search_budget)
        check_normalization(self.calibration.mean, self.calibration.std, self.calibration.resize)
        for t in self.thresholds:
            parse_threshold(t)


@dataclass
class Plan:
    """A conversion checked and ready: everything `bridge convert` refuses is refused by `plan`,
    before any stage runs (`bridge batch` plans every model before it runs any)."""

    source: str
    ref: SourceRef
    routes: list[Route]
    per_lane: dict[str, object]
    thresholds: list
    options: ConvertOptions
    request: ExportRequest
    limits: Limits
    out: OutputFolder
    destinations: list[str]
    inputs: list[Path | None]

    def check_destinations(self) -> None:
        """Once `out` is locked: nothing the run writes may be a user's file or an input."""
        self.out.check_destinations(self.destinations, self.inputs)
        junit = self.options.junit
        if junit:
            check_report_destination(Path(junit), self.inputs, "--junit")
            if self.out.writes(Path(junit)):
                raise UsageError(f"--junit {junit}: bridge writes its report and artifacts there; choose another path")


def plan(source: str, options: ConvertOptions = ConvertOptions(), *, faults: Sequence[Fault] = ()) -> Plan:
    ref = sniff(source, parse=False)  # the export stage parses and checks it (`sniff`)
    if ref.path is not None and any(lane.recognize(ref.path) for lane in lanes().values()
                                    if lane.recognize and not lane.in_process):
        raise UsageError(f"{source}: an artifact, not a source; use `bridge validate SOURCE {source}`")
    routes = plan_routes(list(options.targets), list(options.quantize))
    per_lane = lane_options(routes, options.lanes, ref)
    calibration = options.calibration
    if any(lanes()[t].pixel_inputs and lanes()[t].pixel_inputs(o) for t, o in per_lane.items()):
        calibration = replace(calibration, pixels=True)
    request = ExportRequest(ref, "", tuple(parse_input(t) for t in options.inputs),
                            tuple(parse_dynamic(t) for t in options.dynamic), options.samples, options.seed,
                            options.trust_code, calibration, external_data_bytes=options.external_data_bytes)
    limits = Limits(timeout=options.timeout, max_memory=options.max_memory, verbose=options.verbose,
                    faults=tuple(faults))
    out = OutputFolder(Path(options.out) if options.out else Path("bridge-out") / ref.name,
                       frozenset(lane.suffix for lane in lanes().values()), hook=limits.hit)
    return Plan(source, ref, routes, per_lane, [parse_threshold(t) for t in options.thresholds], options, request,
                limits, out, [f for r in routes for f in lanes()[r.target].files(ref.name, r.mode)],
                [ref.path, *(Path(p) for p in (calibration.path, calibration.parity_path) if p)])


def convert(source: str, options: ConvertOptions = ConvertOptions(), progress: Progress | None = None, *,
            faults: Sequence[Fault] = (), command_line: Sequence[str] | None = None,
            cache: StageCache | None = None, executor: Executor | None = None) -> Report:
    """Convert `source` to every requested target and mode; returns the report (also written as
    `report.json` and `report.html` in the output folder). Raises `UsageError` for bad usage before
    converting. `command_line` is recorded in the report (the CLI passes its argv); `cache` reuses
    stages whose inputs are unchanged (`bridge.cache`); `executor` decides where stages run
    (`bridge.executors`; default: one after another here); `faults` is for the crash tests only."""
    planned = plan(source, options, faults=faults)
    with planned.out:
        planned.check_destinations()
        return run(planned, progress, command_line=command_line, cache=cache, executor=executor)


def run(planned: Plan, progress: Progress | None = None, *, command_line: Sequence[str] | None = None,
        cache: StageCache | None = None, executor: Executor | None = None) -> Report:
    """Run a plan whose output folder is locked and checked; publish the result."""
    report = Report(command="convert", source={"path": planned.source}, command_line=list(command_line or ()) or None)
    work = scratch(planned.out.path).resolve()  # absolute: stages' results name their files, the cache moves them
    own = executor is None
    executor = executor or for_one_model()
    try:
        conversion = _Run(planned.source, planned.ref, planned.routes, planned.per_lane, planned.thresholds,
                          planned.options, work, planned.limits, progress or Progress(), executor, cache, bounded=own,
                          digests=Digests(cache.files if cache is not None else None))
        hub = work / "export" / f"{planned.ref.name}.onnx"
        conversion.execute(report, replace(planned.request, hub_path=str(hub)))
        report.finish()
        planned.out.publish(report, work / STAGED, cache.pages if cache is not None else None)
        if planned.options.junit:
            JUnitReporter().write(report.to_json(), Path(planned.options.junit))
            report.written["junit"] = Path(planned.options.junit)
    finally:
        if own:
            executor.close()
        shutil.rmtree(work, ignore_errors=True)
    return report


@dataclass
class _Run:
    source: str
    ref: SourceRef
    routes: list[Route]
    options_by_lane: dict[str, object]
    threshold_overrides: list
    options: ConvertOptions
    work: Path
    limits: Limits
    progress: Progress
    executor: Executor
    cache: StageCache | None = None
    exported: ExportResult | None = None
    outputs: dict = field(default_factory=dict)  # (runner, sha256, io) -> Future of (runtime, Feeds) or the error
    _lock: threading.Lock = field(default_factory=threading.Lock)
    localizer: Localizer | None = None
    floor: dict = field(default_factory=dict)  # output -> the source's noise floor (Metrics)
    stage_runs: list = field(default_factory=list)  # what ran and what the cache gave back
    digests: Digests = field(default_factory=Digests)
    export_key: str | None = None
    bounded: bool = False  # the executor is this run's own: `_bound` may cap it
    _folders: itertools.count = field(default_factory=itertools.count)
    measured_hub_run: bool = False  # the hub's parity run measures the activation ranges too
    _preload: Callable[[], object] | None = None  # what the page needs, loaded once the next stage runs
    expected: str | None = None  # the lane whose conversion child was started beside the export
    _queued: dict = field(default_factory=dict)  # lane -> Event: its conversion is queued (or will not be)
    peak: int = 0  # the largest single stage's expected memory (`_bound`)
    _runs: dict = field(default_factory=dict)  # lane -> its parity runs' Needs: children started (or None: converted)

    def execute(self, report: Report, request: ExportRequest) -> Report:
        report.source.update({"name": self.ref.name, "format": str(self.ref.format)})
        report.stage_runs = self.stage_runs
        with ThreadPoolExecutor(1, thread_name_prefix="bridge-environment") as pool:
            described = pool.submit(environment.describe, self.options)  # versions, `uname`: while it exports
            try:
                self.exported = self._export(request)
            except ConversionError as e:  # nothing can be converted: every planned artifact carries the error
                error = ErrorRecord.of(e, "export")
                report.artifacts = [ArtifactRecord(r.target, r.mode, error=error,
                                                   parity=not_executed("the source could not be exported"))
                                    for r in self.routes]
                return report
            finally:
                report.environment = described.result()
        if self.bounded:  # a spare child beside the export would raise the run's peak (torch's import)
            self.executor.spares(self.limits)
        if any(r["stage"] == EXPORT.name and r["cache"] != "reused" for r in self.stage_runs):
            # the page will draw new figures: load matplotlib and compile the page's template while
            # the stages work (after the export, whose peak, a torch source's, it would raise; and
            # once the next stage is running: a thread importing matplotlib holds the GIL half the
            # time, and the gateway's own work before that stage starts is on the critical path).
            # A warm run draws none.
            self._preload = lambda: (plots.preload(), html.preload(self.cache.pages if self.cache else None))
        self._describe_source(report)
        for o in self.threshold_overrides:  # unknown output names: exit 2, before any lane converts
            thresholds_for(self.routes[0].spec, self.names, [o])
        self.hub_sha = self.digests.of(self.exported.hub_path)
        self._claim_measured_run()
        jobs = [(lanes()[t], tuple(r.mode for r in self.routes if r.target == t))
                for t in dict.fromkeys(r.target for r in self.routes)]
        self._bound(jobs)
        if self.executor.parallel and not any(r.spec.needs_ranges for r in self.routes) and not any(
                self._searched(*job) for job in jobs):
            done = self._lanes_beside_hub(report, jobs)
        else:
            ranges = self._check_hub(report)
            if self.executor.parallel and len(jobs) > 1:  # one model's lanes side by side
                with ThreadPoolExecutor(len(jobs), thread_name_prefix="bridge-lane") as pool:
                    done = list(pool.map(lambda job: self._lane(*job, ranges), jobs))
            else:
                done = [self._lane(*job, ranges) for job in jobs]
        ex = self.exported
        self.localizer = Localizer(ex.hub_path, ex.feeds, ex.node_names, ex.framework, self.work / "localize",
                                   self.limits, self.progress, self.threshold_overrides,
                                   When.on_failure if self.options.localize and self.hub_outputs is not None
                                   else When.never, call=self._localize)
        for (lane, _), ran in zip(jobs, done, strict=True):  # the report keeps the lanes' order
            report.artifacts += [self._judge(lane, *r) for r in ran]
        return report

    def _lanes_beside_hub(self, report: Report, jobs: list[tuple[Lane, tuple[str, ...]]]) -> list[list[tuple]]:
        """Nothing a lane converts with comes from the hub's runs (and no search judges its steps
        against the hub's outputs): the lanes convert and run their artifacts while the hub runs
        and its activations are measured. The conversions are queued first: each has parity runs
        to follow, and the hub's run may fit beside those where it does not beside a conversion."""
        self._queued = {lane.name: threading.Event() for lane, _ in jobs}

        def lane_job(lane: Lane, modes: tuple[str, ...]) -> list[tuple]:
            try:
                return self._lane(lane, modes, None)
            finally:  # a lane that failed before queuing its conversion holds nothing up
                self._queued[lane.name].set()

        with ThreadPoolExecutor(len(jobs), thread_name_prefix="bridge-lane") as pool:
            running = [pool.submit(lane_job, lane, modes) for lane, modes in jobs]
            for queued in self._queued.values():
                queued.wait()
            self._check_hub(report)
            for lane, modes in jobs:
                self._expect_runs(lane, len(modes))
            return [f.result() for f in running]

    def _check_hub(self, report: Report) -> Ranges | BridgeError | None:
        """The hub on onnxruntime (`report.hub`) and, when a route needs them, its activation ranges
        (`_numerics`): measured in the parity run's own session where the hub is one file."""
        wanted = self._ranges_wanted()
        ranges = None
        if self.measured_hub_run:
            hub, ranges = self._run_measured(*wanted)
        else:
            hub = self._runtime(HUB_RUNNER, self.exported.hub_path, self.hub_sha, None, "onnx-runtime", blocks=(),
                                label="Running the ONNX hub on onnxruntime")
        if isinstance(hub, BridgeError):  # the lanes still convert; stage metrics need the hub's outputs
            report.warnings.append(f"the ONNX hub could not run on onnxruntime: {hub}")
        self.hub_outputs = None if isinstance(hub, BridgeError) else hub[1]
        report.hub = {"route": list(self.exported.route), "opset": self.exported.opset,
                      "runtime": None if self.hub_outputs is None else hub[0],
                      "outputs": None if self.hub_outputs is None else self._judged(
                          "hub-metrics", lambda: self._keyed(self.hub_outputs, self.exported.source_outputs),
                          lambda: stage_metrics(self.hub_outputs, self.exported.source_outputs, self.names)),
                      "folding": self.exported.folding}
        return self._numerics(report, wanted, ranges)

    # --- stages, through the executor and the cache ----------------------------------------------------

    def _call(self, label: str, stage: Stage, args: tuple, kwargs: dict, *, parts: Mapping[str, Any] | None,
              root: Path, need: Needs, keep: Callable[[Outcome], bool] = lambda o: True,
              submitted: Callable[[], object] = lambda: None, limits: Limits | None = None) -> Any:
        """Run one stage (or take it from the cache: same key, same result) and return its result
        or raise its error. `root` is the fresh folder the stage writes in; `keep` says whether a
        finished outcome may be cached."""
        root.mkdir(parents=True, exist_ok=True)
        key = self.cache.key(stage, parts) if self.cache is not None and parts is not None else None
        if key is not None:
            hit = self.cache.get(key, root, self.digests)
            if hit is not None:
                self.stage_runs.append({"stage": stage.name, "cache": "reused", "seconds": 0.0})
                self.progress.reused(label)
                return hit.unwrap()
        outcome = self._submit(label, stage, args, kwargs, need, cached=parts is not None, submitted=submitted,
                               limits=limits)
        if key is not None and keep(outcome):
            self.cache.put(key, outcome, root, self.digests)
        return outcome.unwrap()

    def _judged(self, name: str, parts: Callable[[], Mapping[str, Any] | None], compute: Callable[[], Any]) -> Any:
        """A verdict worked out from arrays (metrics, a parity judgement), taken from the cache when
        the same arrays (by content: `_content`) were judged with the same thresholds by the same
        code (the key holds bridge's code digest, as every stage's does): the arrays are not read
        again. A warm `bridge batch` of four trained models spent half its time judging again the
        outputs the cache had just restored (PP-OCRv4 det's 480x640 maps on 8 samples, per file).
        Not a stage: nothing runs, and `stage_runs` lists none. `parts` returning None (arrays whose
        content is not known, or no cache): computed."""
        wanted = parts() if self.cache is not None else None
        if wanted is None:
            return compute()
        key = self.cache.key(Stage(name, f"bridge.parity:{name}"), wanted)
        root = self.work / "judged" / key  # the value names no file: nothing is placed here
        hit = self.cache.get(key, root)
        if hit is not None:
            return hit.result
        value = compute()
        self.cache.put(key, Outcome(value), root)
        return value

    def _restored_files(self, folder: Path) -> list[tuple[str, str]] | None:
        """Each file of a folder the cache restored, with its sha256 as the restore checked it; None
        when one is not known so (the folder was made in this run)."""
        found = []
        for f in sorted(p for p in folder.rglob("*") if p.is_file()):
            known = self.digests.known(f)
            if known is None:
                return None
            found.append((f.relative_to(folder).as_posix(), known))
        return found

    def _content(self, *feeds: Any) -> list[str | None] | None:
        """What each set of arrays holds, by its folder's digest (known without reading any file
        for a folder the cache restored or stored), or None for no arrays; None altogether when
        one is not a folder of arrays."""
        out: list[str | None] = []
        for f in feeds:
            if f is None:
                out.append(None)
            elif isinstance(f, Feeds):
                out.append(f"{self.digests.of(f.folder)}:{len(f)}:{','.join(f.names)}")
            else:
                return None
        return out

    def _keyed(self, *feeds: Any, **extra: Any) -> dict | None:
        """`_judged`'s key parts: the arrays' contents (`_content`) and what they are judged with."""
        content = self._content(*feeds)
        return None if content is None else {"arrays": content, "names": self.names, **extra}

    def _submit(self, label: str, stage: Stage, args: tuple, kwargs: dict, need: Needs,
                cached: bool = True, submitted: Callable[[], object] = lambda: None,
                limits: Limits | None = None) -> Outcome:
        start = time.perf_counter()
        try:
            with self.progress.step(label):
                future = self.executor.submit(stage, args, kwargs, limits or self.limits, need)
                submitted()
                with self._lock:
                    preload, self._preload = self._preload, None
                if preload is not None:
                    preload()
                outcome = future.result()
                if outcome.error is not None:
                    raise _StageFailed  # leaves the step unticked: the error is the user's one line
        except _StageFailed:
            pass
        total = time.perf_counter() - start
        ran = outcome.seconds or total
        ran_as = ("ran" if cached else "uncached") if self.cache else "off"
        self.stage_runs.append({"stage": stage.name, "cache": ran_as,
                                "seconds": round(ran, 3), "waited": round(max(0.0, total - ran), 3)})
        return outcome

    def _export(self, request: ExportRequest) -> ExportResult:
        """The export, keyed in two steps (`bridge.cache`): what is known up front, then the files
        earlier runs of it read, hashed now."""
        root = Path(request.hub_path).parent
        label = f"Exporting {self.ref.name} to ONNX"
        need = self._export_needs()
        if self.cache is None:
            self._expect_conversion(need)
            return self._call(label, EXPORT, (request,), {}, parts=None, root=root, need=need)
        root.mkdir(parents=True, exist_ok=True)
        prekey = self.cache.key(EXPORT, self._export_parts(request))
        for paths in self.cache.variants(prekey):
            reads = [(p, read_digest(p, self.digests.file)) for p in paths]
            if any(d == ABSENT for _, d in reads):
                continue
            key = self.cache.with_reads(prekey, reads)
            hit = self.cache.get(key, root, self.digests)
            if hit is not None:
                self.export_key = key
                self.stage_runs.append({"stage": EXPORT.name, "cache": "reused", "seconds": 0.0})
                self.progress.reused(label)
                return hit.unwrap()
        self._expect_conversion(need)
        outcome = self._submit(label, EXPORT, (request,), {}, need)
        if outcome.error is None and outcome.reads is not None:  # the export's errors are not kept: see below
            work = str(self.work) + os.sep
            reads = [(p, d) for p, d in outcome.reads if not p.startswith(work)]
            self.export_key = self.cache.with_reads(prekey, reads)
            self.cache.put(self.export_key, outcome, root, self.digests)
            self.cache.remember(prekey, [p for p, _ in reads])
        # An export that failed is run again next time: its errors are the user's code's and files',
        # often fixed outside anything the key sees (a missing package installed, a file permission).
        return outcome.unwrap()

    def _export_needs(self) -> Needs:
        """Its memory, and the frameworks its child may import before the job arrives: the same
        guess the console script started the run's first child with (`bridge.console`)."""
        kind = "export-onnx" if self.ref.format is Format.ONNX else "export"
        return replace(needs(kind, _bytes(self.ref.path), self.limits), preload=export_modules(self.ref.text))

    def _expect_conversion(self, export: Needs) -> None:
        """While the export runs, start the child the first lane's conversion will run in, importing
        its converter (`Lane.convert_preload`: onnx2tf's, ~1 s of the conversion's start), where
        the export's expected peak plus that child fits within the conversion's own expected peak
        (sized by the source file: an ONNX source's hub is about its size). The run's expected
        peak is then unchanged: a large ONNX model's export, never a torch export (the run's peak)."""
        if not (self.bounded and self.executor.parallel) or self.limits.max_memory:  # a limit: nothing preloads
            return
        lane = next((lanes()[r.target] for r in self.routes if not lanes()[r.target].in_process), None)
        if lane is None or not lane.convert_preload or lane.converter(self.options_by_lane[lane.name]) != lane.convert:
            return
        convert = self._convert_needs(lane, _bytes(self.ref.path), variant=False)
        if export.memory + lane.convert_preload_memory <= convert.memory:
            self.executor.expect(self.limits, convert)
            self.expected = lane.name

    def _convert_needs(self, lane: Lane, hub_bytes: int, variant: bool) -> Needs:
        """A lane's conversion stage: its declared memory and the modules its child imports first
        (none for another route: our preflight and stage blocks are the default route's)."""
        if variant:
            return needs("convert", hub_bytes, self.limits)
        return replace(needs("convert", hub_bytes, self.limits, lane.convert_memory), preload=lane.convert_preload)

    def _bound(self, jobs: list[tuple[Lane, tuple[str, ...]]]) -> None:
        """On `bridge convert`'s own executor, stages overlap only while their expected peaks fit
        within the largest single stage's: running side by side never raises the run's expected
        peak above running one after another (a large model's conversion runs alone)."""
        if not self.bounded:
            return
        hub = _bytes(self.exported.hub_path)
        expected = [self._export_needs(), needs("runtime", hub, self.limits), self._probe_needs()]
        for lane, _ in jobs:
            expected += [needs("convert", hub, self.limits, lane.convert_memory),
                         needs("runtime", hub, self.limits, lane.runtime_memory)]
        self.peak = max(n.memory for n in expected)
        self.executor.bound(self.peak)

    def _probe_needs(self) -> Needs:
        return probe_needs(_bytes(self.exported.hub_path), self.exported.activation_bytes, self.limits)

    def _export_parts(self, request: ExportRequest) -> dict:
        ref = request.source
        calibration = request.calibration
        return {
            # the work folder is new each run; the hub's file name is the model's
            "request": replace(request, source=replace(ref, text=""), hub_path=Path(request.hub_path).name,
                               data_dir=None, calibration=replace(calibration, path=None, parity_path=None)),
            "source": self.digests.of(ref.path, user=True) if ref.path is not None else None,
            "calibration": [(os.path.abspath(p), self.digests.of(p, user=True)) if p else None
                            for p in (calibration.path, calibration.parity_path)],
            "cwd": os.getcwd() if ref.format is Format.PYTHON and ref.path is None else None,  # module entrypoints
        }

    def _hub_parts(self) -> dict:
        hub = self.exported.hub_path
        return {"hub": self.digests.of(hub), "hub_data": self.digests.of(f"{hub}.data")}

    @property
    def names(self) -> list[str]:
        return [o.name for o in self.exported.outputs]

    def _describe_source(self, report: Report) -> None:
        ex = self.exported
        report.source.update({
            "framework": ex.framework,
            "format": ex.format,
            "inputs": [s.to_json() for s in ex.inputs],
            "outputs": [s.to_json() for s in ex.outputs],
            "shapes": "dynamic" if any(s.dynamic for s in ex.inputs) else "static",
            "params": ex.params,
        })
        report.warnings += ex.warnings
        report.samples["parity"] = ex.parity_origin.to_json()
        if any(r.spec.calibrated for r in self.routes):
            report.samples["calibration"] = ex.calibration_origin.to_json()
        else:
            report.warnings = [w for w in report.warnings if "--calibration" not in w]
        self.floor = self._judged("noise-floor", lambda: self._keyed(ex.source_outputs, ex.nudged_outputs),
                                  lambda: noise_floor(ex.source_outputs, ex.nudged_outputs, self.names))
        if self.floor:
            report.source["noise_floor"] = floor_json(self.floor)

    def _numerics(self, report: Report, wanted: tuple | None, ranges: Ranges | None) -> Ranges | BridgeError | None:
        """NaN/Inf in the source's outputs (`source.nonfinite`); then, once per run and only when a
        route needs them, the hub's activation ranges (`ranges`, when the hub's run measured them):
        the fp16 check, and calibration ranges for lanes that quantize with them."""
        from bridge.validators.compare import NonFinite

        source = self.exported.source_outputs
        counts, flat = self._judged("source-numerics", lambda: self._keyed(source), lambda: (
            {o.name: NonFinite.of(Column(source, o.name)) for o in self.exported.outputs},
            flat_outputs({o.name: Column(source, o.name) for o in self.exported.outputs})))
        report.source["nonfinite"] = {n: c.to_json() for n, c in counts.items()}
        report.warnings += nonfinite_warning(counts) + flat
        if wanted is None or self.hub_outputs is None:
            return None
        fp16, calibrated, samples = wanted
        ex = self.exported
        if ranges is None:
            try:
                ranges = self._call("Measuring activations" + (" for fp16" if fp16 else ""), RANGES,
                                    (ex.hub_path, ex.feeds, samples, ex.node_names),
                                    {"fp16": bool(fp16), "calibrated": calibrated}, parts=self._ranges_parts(wanted),
                                    root=self.work / "ranges", need=self._probe_needs())
            except BridgeError as e:
                report.warnings.append(f"the hub's activation ranges could not be measured: {e}")
                return e
        artifacts = [FP16Artifact(str(r), r.spec.clamps_fp16_constants, lanes()[r.target].notes,
                                  r.spec.keeps_fp16_constants) for r in fp16]
        report.warnings += fp16_warnings(ranges.fp16, artifacts)
        return ranges

    def _ranges_wanted(self) -> tuple[list[Route], bool, Any] | None:
        """(routes computing in fp16, whether a lane calibrates on the ranges, the calibration
        samples measured), or None when no route needs the ranges."""
        fp16 = [r for r in self.routes if r.spec.fp16_compute]
        calibrated = any(r.spec.needs_ranges for r in self.routes)
        if not (fp16 or calibrated):
            return None
        ex = self.exported
        # Synthetic calibration samples tell the fp16 check nothing the parity samples do not:
        # they are measured only when a route calibrates on them (on ResNet50: 40 samples -> 8).
        return fp16, calibrated, ex.calibration if calibrated or ex.calibration_origin.origin == "user" else ()

    def _ranges_parts(self, wanted: tuple) -> dict:
        fp16, calibrated, samples = wanted
        ex = self.exported
        return {**self._hub_parts(), "feeds": self.digests.of(ex.feeds.folder),
                "calibration": self.digests.of(ex.calibration.folder) if samples else None,
                "node_names": ex.node_names, "fp16": bool(fp16), "calibrated": calibrated}

    def _claim_measured_run(self) -> None:
        """When a route needs the hub's activation ranges and the hub is one file, its parity run
        measures them in the same session (`ranges.run_and_measure`): one onnxruntime session and
        one pass over the samples instead of two (ResNet50: 1.4 s). Claimed before any lane starts,
        so a lane whose artifact is the hub's bytes waits for this run rather than starting its own."""
        if self._ranges_wanted() is not None and not Path(f"{self.exported.hub_path}.data").exists():
            self.measured_hub_run = True
            self.outputs[self._hub_key] = Future()

    @property
    def _hub_key(self) -> tuple:
        return (HUB_RUNNER, self.hub_sha, None)

    def _run_measured(self, fp16: list, calibrated: bool, samples) -> tuple[tuple | BridgeError, Ranges | None]:
        ex = self.exported
        root = self.work / "runs" / f"outputs-{next(self._folders)}"
        label = "Running the ONNX hub on onnxruntime, measuring activations" + (" for fp16" if fp16 else "")
        result = _settle(self.outputs[self._hub_key], lambda: self._call(
            label, MEASURED_RUN, (ex.hub_path, ex.feeds, samples, ex.node_names, str(root)),
            {"fp16": bool(fp16), "calibrated": calibrated},
            parts={**self._ranges_parts((fp16, calibrated, samples)), "runner": HUB_RUNNER},
            root=root, need=self._probe_needs()), shared=lambda r: r[0])
        return (result, None) if isinstance(result, BridgeError) else result

    def _lane(self, lane: Lane, modes: tuple[str, ...], ranges, options: object = None,
              folder: str | None = None) -> list[tuple]:
        """Convert, then run each artifact on the parity samples; judged later (`_judge`), once the
        hub's outputs are known. A mixed mode given no layers to keep is searched (`_search`): its
        steps are judged as they run, so it is only asked for once the hub's outputs are known."""
        ex = self.exported
        if options is None:
            options = self.options_by_lane[lane.name]
            searched = self._searched(lane, modes)
            if searched:
                rest = tuple(m for m in modes if m not in searched)
                plain = iter(self._lane(lane, rest, ranges, options) if rest else ())
                return [self._search(lane, m, ranges) if m in searched else next(plain) for m in modes]
        converter = lane.converter(options)
        variant = converter != lane.convert  # another route: our preflight and stage blocks are the default's
        req = LaneRequest(
            hub_path=ex.hub_path, workdir=str(self.work / (folder or lane.name)), name=self.ref.name, modes=modes,
            framework=ex.framework, inputs=tuple(ex.inputs), outputs=tuple(ex.outputs), calibration=ex.calibration,
            node_names=ex.node_names, options=options, source=self.ref, trust_code=self.options.trust_code,
            mean=self.options.calibration.mean, std=self.options.calibration.std,
            ranges=ranges.calibration if isinstance(ranges, Ranges) and any(
                r.spec.needs_ranges for r in self.routes) else None, hub_route=ex.route)
        Path(req.workdir).mkdir(exist_ok=True)
        start = time.perf_counter()
        try:
            if lane.in_process:
                from bridge.lanes import call

                arts: list[LaneArtifact] = call(converter, req)
            else:
                stage = Stage(f"{lane.name}-convert", "bridge.lanes:preflight_then_convert",
                              () if variant else lane.convert_blocks)
                preflight = None if variant else lane.preflight
                arts = self._call(f"Converting to {lane.name} ({', '.join(modes)})", stage,
                                  (lane.name, preflight, converter, req), {},
                                  parts=self._lane_parts(lane, converter, preflight, variant, req),
                                  root=Path(req.workdir), need=self._convert_needs(lane, _bytes(ex.hub_path), variant),
                                  keep=lambda o: o.error is not None or not any(a.error for a in o.result),
                                  submitted=self._converting(lane))
        except ConversionError as e:
            error = ErrorRecord.of(e, f"{lane.name}-convert")
            arts = [LaneArtifact(mode=m, error=error, seconds=time.perf_counter() - start) for m in modes]
        finally:
            self._converting(lane)()  # whatever happened, nothing waits for it any longer
            if self.expected == lane.name:  # taken by now, unless the conversion came from the cache
                self.executor.forget(self.limits, self._convert_needs(lane, 0, variant=False))
        with self._lock:  # converted: no child is started for its runs from now on (`_expect_runs`)
            runs = self._runs.setdefault(lane.name, None) if folder is None else None
        return self._place_all(lane, arts, runs)

    def _place_all(self, lane: Lane, arts: list[LaneArtifact], runs: Needs | None) -> list[tuple]:
        """`_place` each artifact; then the children started for their runs that none took end
        (`_expect_runs`: a file that failed to convert has no run)."""
        try:
            if self.executor.parallel and len(arts) > 1:  # each file's parity run as soon as a slot is free
                with ThreadPoolExecutor(len(arts), thread_name_prefix="bridge-run") as pool:
                    return list(pool.map(lambda a: self._place(lane, a), arts))
            return [self._place(lane, a) for a in arts]
        finally:
            if runs is not None:
                self.executor.forget(self.limits, runs)

    def _expect_runs(self, lane: Lane, count: int) -> None:
        """Once the hub has run, while the lane still converts: start the children its `count`
        parity runs will run in, importing its runtime (`Lane.runtime_preload`) on the core the
        hub's run left free (started beside both, their imports would take a core from one of
        them), where the conversion and those children fit within the run's largest single
        stage's expected peak (a torch export's: MobileNetV2's parity runs then start ~0.2 s
        sooner; never beside a conversion that is itself the peak, as ResNet50's is)."""
        if not (self.bounded and lane.runtime_preload) or self.limits.max_memory:
            return
        hub = _bytes(self.exported.hub_path)
        beside = self._convert_needs(lane, hub, variant=False).memory + count * lane.runtime_preload_memory
        runs = Needs(memory=0, preload=lane.runtime_preload)
        with self._lock:
            if beside > self.peak or lane.name in self._runs:  # its conversion is over
                return
            self._runs[lane.name] = runs
            for _ in range(count):
                self.executor.expect(self.limits, runs)

    def _converting(self, lane: Lane) -> Callable[[], object]:
        """What to call once the lane's conversion is queued (`execute` waits for it)."""
        queued = self._queued.get(lane.name)
        return queued.set if queued is not None else lambda: None

    def _searched(self, lane: Lane, modes: tuple[str, ...]) -> set[str]:
        """The mixed modes of `modes` the user named no layers to keep for: they are searched."""
        options = self.options_by_lane[lane.name]
        return {m for m in modes if lane.mode(m).mixed and getattr(options, "keep", None) is None}

    def _search(self, lane: Lane, mode: str, ranges) -> tuple:
        """The mixed-precision search for one mode (`bridge.mixed`): each step makes and judges an
        artifact with a `keep` list (converting, or cut from the first step's files by the lane's
        `remix`); every step's artifact is set aside, and the fewest-kept passing one (or the last
        tried) is the run's, returned judged (`_judge` only localises it)."""
        from bridge.base.lane import MIXED_BASE
        from bridge.mixed import HELD, Search

        options = self.options_by_lane[lane.name]
        staged = self.work / STAGED / lane.filename(self.ref.name, mode)
        held: list[tuple[tuple, Path | None]] = []
        base: dict = {}

        def attempt(kept: tuple[tuple[str, ...], ...], *wide: bool) -> tuple[bool, str]:
            step = len(held)
            if base and lane.remix:
                placed = self._remix(lane, held[0][0][1], base, kept, wide, step)
            else:
                names = ",".join(dict.fromkeys(n for unit in kept for n in unit if not n.startswith(HELD)))
                placed = self._lane(lane, (mode,), ranges, replace(options, keep=names),
                                    folder=f"{lane.name}-search-{step}")[0]
                base.update(placed[1].details.pop(MIXED_BASE, None) or {})
            rec = self._parity(lane, *placed)
            aside = None
            if rec.path is not None:
                aside = self.work / "search" / f"{step}-{staged.name}"
                aside.parent.mkdir(exist_ok=True)
                os.replace(staged, aside)
            held.append((placed, aside))
            if rec.error is not None:
                raise _Stop
            # the conversion's seconds as the lane measured them (kept in a cached result) and the parity run's
            return bool(rec.parity), _summary(rec), rec.seconds + (rec.parity.seconds if rec.parity else 0.0)

        search = Search(attempt, lambda: self._rank(lane, mode, ranges, search, held[0]), self.exported.node_names,
                        widen=lane.widen if lane.remix is not None else None, remixed=lane.remix is not None,
                        budget=self.options.search_budget,
                        every=lambda: [(n,) for n in base.get("units", ())])
        try:
            best = search.run()
        except _Stop:
            best = None
        chosen = search.chosen if best is not None and search.chosen is not None else len(held) - 1
        placed, aside = held[chosen]
        if aside is not None:
            os.replace(aside, staged)
        rec = placed[0]
        rec.details["search"] = search.to_json()
        if best is None and rec.error is None and rec.parity is not None:
            rec.parity.reason = f"{search.outcome}; {rec.parity.reason}" if rec.parity.reason else search.outcome
        return placed

    def _remix(self, lane: Lane, first: LaneArtifact, base: dict, kept: tuple[tuple[str, ...], ...],
               wide: tuple[bool, ...], step: int) -> tuple:
        """A search step cut from the first step's files by the lane's `remix` (a child stage, never
        cached), placed and run on the parity samples as a converted artifact is. `wide`: the step's
        flags (`Widen.key`, and `Widen.second` where the lane has one), given to `remix` in order."""
        folder = self.work / f"{lane.name}-search-{step}"
        out = folder / Path(first.path or lane.filename(self.ref.name, first.mode)).name
        start = time.perf_counter()
        stage = Stage(f"{lane.name}-remix", lane.remix, lane.convert_blocks)
        made: LaneArtifact = self._call(
            f"Keeping {len(kept)} layer(s) in higher precision", stage, (base, kept, self.exported.node_names,
                                                                        str(out), *wide), {}, parts=None, root=folder,
            need=needs("convert", _bytes(self.exported.hub_path), self.limits, lane.convert_memory))
        art = replace(first, path=made.path, warnings=[w for w in first.warnings if not w.startswith(
            f"{first.mode}: no integer op")] + made.warnings, details={**first.details, **made.details},
                      seconds=time.perf_counter() - start)
        return self._place(lane, art)

    def _rank(self, lane: Lane, mode: str, ranges, search, first: tuple) -> list:
        """Layers by sensitivity, on the first calibration samples, within what is left of the
        search's budget: for int8, the isolated profile of the first step's artifact (its
        localisation, `bridge.mixed.ranked_layers`); for fp16 (or where that finds no layer), what
        each hub layer costs alone (`converters/onnx/sensitivity.py`)."""
        ex = self.exported
        samples = ex.calibration[:RANK_SAMPLES]
        start = time.perf_counter()
        left = max(search.budget_seconds - sum(s.seconds for s in search.steps), 1.0)
        (_, art, _, _), aside = first
        kind = lane.mode(mode).mixed
        if kind == "int8" and lane.tracer and aside is not None:
            from bridge.mixed import ranked_layers

            # The ranking is part of the search: stopped when it would take the search past its budget
            def call(label, stage, req):
                return self._localize(label, stage, req, timeout=left)

            localizer = Localizer(ex.hub_path, samples, ex.node_names, ex.framework, self.work / "rank",
                                  self.limits, self.progress, self.threshold_overrides, When.always,
                                  call=call, carry_seconds=math.inf, max_carried=RANK_CARRIED)
            loc = localizer.run(lane, lane.mode(mode), str(aside), art.io, art.correspondence, aside.name)
            ranked = ranked_layers(loc)
            search.ranking_method = f"isolated profile of the first step's artifact ({loc.get('status')})"
            if ranked:
                return ranked
            left -= time.perf_counter() - start
            if left <= 1.0:
                search.ranking_method += f"; stopped at the search's budget: {loc.get('reason', '')}"[:300]
                return []
        spans = ranges.calibration if isinstance(ranges, Ranges) else {}
        search.ranking_method = "each hub layer alone in the lower precision (onnxruntime)"
        ranked = self._call("Ranking layers by sensitivity", SENSITIVITY, (ex.hub_path, samples, kind, spans),
                            {"budget_seconds": left / 2}, parts=None, root=self.work / "sensitivity",
                            need=needs("runtime", _bytes(ex.hub_path), self.limits))
        return [name for name, _ in ranked]

    def _lane_parts(self, lane: Lane, converter: str, preflight: str | None, variant: bool,
                    req: LaneRequest) -> dict | None:
        """A lane reads the hub and the calibration samples (by content), its options, and the
        source only on a route that reloads it (then the export's key stands for the source; with
        none, the lane is not cached)."""
        reads_source = variant or not converter.startswith("bridge.")
        if reads_source and self.export_key is None:
            return None
        return {
            "lane": lane.name, "converter": converter, "preflight": preflight, **self._hub_parts(),
            "code": None if converter.startswith("bridge.") else package_digest(converter),
            "request": replace(req, hub_path="", workdir="", calibration=self.digests.of(req.calibration.folder),
                               source=None),
            "source": self.export_key if reads_source else None,
        }

    def _place(self, lane: Lane, art: LaneArtifact) -> tuple:
        """Stage the artifact under its published name and run it on the parity samples."""
        rec = ArtifactRecord(target=lane.name, quantization=art.mode, route=list(art.route), seconds=art.seconds,
                             warnings=art.warnings, details=art.details)
        if art.error:
            rec.error = art.error
            rec.parity = not_executed(f"conversion failed at stage {art.error.stage}")
            return rec, art, None, 0.0
        # `publish` moves it into `out` after every lane, under the name checked before the run
        dest = self.work / STAGED / lane.filename(self.ref.name, art.mode)
        dest.parent.mkdir(exist_ok=True)
        one_file = os.path.isfile(art.path)
        restored = self.digests.known(art.path) if one_file else None
        files = None if one_file else self._restored_files(Path(art.path))
        os.replace(art.path, dest)
        # A file the cache just restored was checked against its entry as it was linked out: the
        # same bytes, in this run's own work folder, are not read a second time. Nor a folder's
        # (an .mlpackage): its sha256 over its bytes is kept under the sha256s of its files.
        rec.path, rec.bytes = dest.name, size(dest)
        rec.sha256 = restored or self._judged("folder-sha256", lambda: {"files": files} if files else None,
                                              lambda: sha256(dest))
        data = Path(f"{art.path}.data")
        if data.exists():  # tensors beside the graph (models over 2 GB)
            moved = dest.with_name(f"{dest.name}.data")
            os.replace(data, moved)
            rec.details["external_data"] = {"path": moved.name, "bytes": size(moved), "sha256": sha256(moved)}
            rec.bytes += rec.details["external_data"]["bytes"]
        ex = self.exported
        rec.bytes_per_param = round(rec.bytes / ex.params, 4) if ex.params else None
        rec.io = (art.io or IO.identity(ex.inputs, ex.outputs)).to_json()
        start = time.perf_counter()
        result = self._runtime(lane.runner, str(dest), rec.sha256, art.io, f"{lane.name}-runtime",
                               blocks=lane.runtime_blocks, label=f"Checking parity of {dest.name}",
                               data=rec.details.get("external_data", {}).get("sha256"), memory=lane.runtime_memory,
                               preload=lane.runtime_preload)
        return rec, art, result, time.perf_counter() - start

    def _judge(self, lane: Lane, rec: ArtifactRecord, art: LaneArtifact, result, seconds: float) -> ArtifactRecord:
        """The artifact's parity (`_parity`; a searched mode's comes judged), localised when it fails."""
        if rec.parity is None:
            self._parity(lane, rec, art, result, seconds)
        if art.error or isinstance(result, BridgeError):
            return rec
        if rec.sha256 == self.hub_sha and self.localizer.wanted(rec.parity):  # external data or not
            rec.parity.localization = {"status": "not_applicable", "reason": (
                "this ONNX file is the hub, the reference localisation compares artifacts with; its error comes "
                "from the export (source->onnx)")}
        elif self.localizer.wanted(rec.parity):
            path = self.work / STAGED / rec.path
            self.localizer.attach(rec.parity, lane, lane.mode(art.mode), str(path), art.io, art.correspondence,
                                  rec.path)
        return rec

    def _parity(self, lane: Lane, rec: ArtifactRecord, art: LaneArtifact, result, seconds: float) -> ArtifactRecord:
        """The artifact's parity against the source (and the hub, for stage metrics)."""
        if art.error:
            return rec
        start = time.perf_counter() - seconds
        if isinstance(result, BridgeError):
            runtime_failed(rec, result).parity.seconds = time.perf_counter() - start
            return rec
        ex = self.exported
        spec = lane.mode(art.mode)
        thresholds = thresholds_for(spec, self.names, self.threshold_overrides)
        is_hub = rec.sha256 == self.hub_sha and not rec.details.get("external_data")
        runtime, outputs = result
        from_hub = not art.route or art.route[0] == "onnx"  # else stage metrics would blame a stage it never passed
        # The hub itself has no onnx->target stage: its parity is the report's source->onnx (`hub`).
        onnx = self.hub_outputs if from_hub and not is_hub else None
        settings = {"thresholds": thresholds, "runtime": runtime, "inputs": ex.parity_origin.origin,
                    "calibration": ex.calibration_origin.origin if spec.calibrated else None, "sizes": self._sizes()}
        rec.parity = self._judged(
            "judge", lambda: self._keyed(outputs, ex.source_outputs, onnx, floor=floor_json(self.floor), **settings),
            lambda: judge(actual=outputs, source=ex.source_outputs, onnx=onnx, names=self.names, floor=self.floor,
                          **settings))
        rec.parity.seconds = time.perf_counter() - start
        return rec

    def _localize(self, label: str, stage: Stage, req, timeout: float | None = None) -> dict:
        """A localisation stage through the executor, uncached (`Localizer`): listed in `stage_runs`.
        With `timeout`, it is stopped after that many seconds (or the run's own timeout, if sooner)."""
        limits = self.limits
        if timeout is not None:
            limits = replace(limits, timeout=min(timeout, limits.timeout or math.inf))
        return self._call(label, stage, (req,), {}, parts=None, root=Path(req.work), limits=limits,
                          need=needs("localize", _bytes(req.hub) + _bytes(req.artifact), self.limits))

    def _runtime(self, runner: str, path: str, digest: str, io, stage: str, blocks: tuple[str, ...], *,
                 label: str, data: str | None = None, memory: tuple[int, float] | None = None,
                 preload: tuple[str, ...] = ()) -> tuple[str, Feeds] | BridgeError:
        """An artifact's outputs on the parity samples, run once per (runtime, content): the ONNX
        artifact is the hub's bytes, so the hub's run is its run. Its memory is sized by the hub's
        bytes where the file is smaller: a runtime widens float16 weights to float32 as it loads
        them (ResNet50's fp16 .tflite, 51 MB, ran at 267 MiB; its fp32 file, 102 MB, at 298)."""
        key = (runner, digest, io)
        with self._lock:  # lanes run while the hub does: the first to ask runs it, the others wait
            mine = key not in self.outputs
            if mine:
                self.outputs[key] = Future()
        if mine:
            feeds = self.exported.feeds
            root = self.work / "runs" / f"outputs-{next(self._folders)}"
            parts = {"runner": runner, "artifact": digest, "artifact_data": data, "io": io,
                     "feeds": self.digests.of(feeds.folder)}
            runs = Stage(stage, "bridge.validators.runners:run_samples", blocks)
            _settle(self.outputs[key], lambda: self._call(
                label, runs, (runner, path, feeds, io, str(root)), {}, parts=parts, root=root,
                need=replace(needs("runtime", max(_bytes(path), _bytes(self.exported.hub_path)), self.limits, memory),
                             preload=preload)))
        return self.outputs[key].result()

    def _sizes(self) -> dict[str, list[int]]:
        return {f"{s.name}:{a}": [s.shape[a], second_size(s.shape[a])]
                for s in self.exported.inputs for a in s.dynamic}


def _settle(future: Future, run: Callable[[], Any], shared: Callable[[Any], Any] = lambda r: r) -> Any:
    """Run a stage others may be waiting on through `future`: its result (or its error, as a
    value) is returned, and `shared(result)` given to them; a bug is raised to them too."""
    try:
        result = run()
    except BridgeError as e:
        result = e
    except BaseException as e:  # a bug: whoever waits on this run sees it too
        future.set_exception(e)
        raise
    future.set_result(result if isinstance(result, BridgeError) else shared(result))
    return result


class _Stop(Exception):
    """A search step failed to convert: the search stops with that step's error."""


def _summary(rec: ArtifactRecord) -> str:
    """A step's verdict in a few words: its worst output's figures."""
    outputs = rec.parity.outputs if rec.parity is not None else {}
    if not outputs:
        return rec.parity.reason if rec.parity is not None else "not judged"
    name, m = min(outputs.items(), key=lambda kv: kv[1].get("snr_db") if kv[1].get("snr_db") is not None else -1e9)
    return f"{name}: snr_db {m.get('snr_db')}, cosine {m.get('cosine')}"


def _bytes(path) -> int:
    """A model's size on disk (0 for an entrypoint's module: its weights are found by running it)."""
    if path is None:
        return 0
    p = Path(path)
    try:
        return size(p) if p.exists() and (p.is_dir() or p.suffix != ".py") else 0
    except OSError:
        return 0
