"""`bridge convert`: source -> ONNX hub -> target lanes -> runners -> comparison -> report.

The orchestrator knows lanes only through their declarations (`bridge.base.lane.Lane`): it plans
routes from their mode tables, runs their stages by the paths they declare, and judges their
artifacts with the thresholds they declare. Nothing here names a target.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from bridge import environment
from bridge.base.arrays import Column, Feeds
from bridge.base.bindings import IO
from bridge.base.errors import BridgeError, ConversionError, ErrorRecord, UsageError
from bridge.base.files import scratch, sha256, size
from bridge.base.lane import ExportRequest, ExportResult, Lane, LaneArtifact, LaneRequest
from bridge.base.numerics import Ranges
from bridge.base.samples import CalibrationOptions
from bridge.base.sources import SourceRef, sniff
from bridge.base.tensors import parse_dynamic, parse_input, second_size
from bridge.lanes import lanes
from bridge.numerics import FP16Artifact, flat_outputs, fp16_warnings, nonfinite_warning
from bridge.options import DEFAULT_TIMEOUT, check_limits, check_normalization
from bridge.parity import floor_json, judge, noise_floor, not_executed, runtime_failed
from bridge.plan import Route, lane_options, parse_threshold, plan_routes, thresholds_for
from bridge.progress import Progress
from bridge.publish import STAGED, OutputFolder
from bridge.report import ArtifactRecord, Report
from bridge.stages import Fault, Limits, Stage, run_stage

EXPORT = Stage("export", "bridge.converters.onnx.export:export_source")
RANGES = Stage("activation-ranges", "bridge.converters.onnx.ranges:measure")
HUB_RUNNER = "bridge.validators.runners.onnxruntime:OnnxRuntimeRunner"


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

    def __post_init__(self):
        check_limits(timeout=self.timeout, max_memory=self.max_memory, samples=self.samples, seed=self.seed)
        check_normalization(self.calibration.mean, self.calibration.std, self.calibration.resize)
        for t in self.thresholds:
            parse_threshold(t)


def convert(source: str, options: ConvertOptions = ConvertOptions(), progress: Progress | None = None, *,
            faults: Sequence[Fault] = ()) -> Report:
    """Convert `source` to every requested target and mode; returns the report (also written as
    `report.json` in the output folder). Raises `UsageError` for bad usage before converting.
    `faults` is for the crash tests only."""
    ref = sniff(source)
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
    with out:
        out.check_destinations([f for r in routes for f in lanes()[r.target].files(ref.name, r.mode)],
                               [ref.path, *(Path(p) for p in (calibration.path, calibration.parity_path) if p)])
        work = scratch(out.path)
        try:
            run = _Run(source, ref, routes, per_lane, [parse_threshold(t) for t in options.thresholds], options,
                       work, limits, progress or Progress())
            report = run.execute(replace(request, hub_path=str(work / f"{ref.name}.onnx")))
            out.publish(report, work / STAGED)
        finally:
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
    exported: ExportResult | None = None
    outputs: dict = field(default_factory=dict)  # (runner, sha256) -> (runtime, Feeds) or the error: run once
    floor: dict = field(default_factory=dict)  # output -> the source's noise floor (Metrics)

    def execute(self, request: ExportRequest) -> Report:
        report = Report(source={"path": self.source, "format": str(self.ref.format)},
                        environment=environment.describe(self.options))
        with self.progress.step(f"Exporting {self.ref.name} to ONNX"):
            try:
                self.exported = run_stage(EXPORT, request, limits=self.limits)
            except ConversionError as e:  # nothing can be converted: every planned artifact carries the error
                error = ErrorRecord.of(e, "export")
                report.artifacts = [ArtifactRecord(r.target, r.mode, error=error,
                                                   parity=not_executed("the source could not be exported"))
                                    for r in self.routes]
                return report
        self._describe_source(report)
        for o in self.threshold_overrides:  # unknown output names: exit 2, before any lane converts
            thresholds_for(self.routes[0].spec, self.names, [o])
        hub_sha = sha256(Path(self.exported.hub_path))
        with self.progress.step("Running the ONNX hub on onnxruntime"):
            hub = self._runtime(HUB_RUNNER, self.exported.hub_path, hub_sha, None, "onnx-runtime", blocks=())
        if isinstance(hub, BridgeError):  # the lanes still convert; stage metrics need the hub's outputs
            report.warnings.append(f"the ONNX hub could not run on onnxruntime: {hub}")
        self.hub_outputs = None if isinstance(hub, BridgeError) else hub[1]
        self.hub_sha = hub_sha
        ranges = self._numerics(report)
        for target in dict.fromkeys(r.target for r in self.routes):
            modes = tuple(r.mode for r in self.routes if r.target == target)
            report.artifacts += self._lane(lanes()[target], modes, ranges)
        return report

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
            "onnx_opset": ex.opset,
            "hub": ex.hub,
        })
        report.warnings += ex.warnings
        if not any(r.spec.calibrated for r in self.routes):
            report.warnings = [w for w in report.warnings if "--calibration" not in w]
        report.environment["calibration"] = ex.calibration_origin
        report.source["parity_inputs"] = ex.parity_origin
        self.floor = noise_floor(ex.source_outputs, ex.nudged_outputs, self.names)
        if self.floor:
            report.source["noise_floor"] = floor_json(self.floor)

    def _numerics(self, report: Report) -> Ranges | BridgeError | None:
        """NaN/Inf in the source's outputs (`source.nonfinite`); then, once per run and only when a
        route needs them, the hub's activation ranges: the fp16 check, and calibration ranges for
        lanes that quantize with them."""
        from bridge.validators.compare import NonFinite

        counts = {o.name: NonFinite.of(Column(self.exported.source_outputs, o.name)) for o in self.exported.outputs}
        report.source["nonfinite"] = {n: c.to_json() for n, c in counts.items()}
        report.warnings += nonfinite_warning(counts)
        report.warnings += flat_outputs({o.name: Column(self.exported.source_outputs, o.name)
                                         for o in self.exported.outputs})
        fp16 = [r for r in self.routes if r.spec.fp16_compute]
        calibrated = any(r.spec.needs_ranges for r in self.routes)
        if not (fp16 or calibrated) or self.hub_outputs is None:
            return None
        with self.progress.step("Measuring activations" + (" for fp16" if fp16 else "")):
            try:
                ranges: Ranges = run_stage(RANGES, self.exported.hub_path, self.exported.feeds,
                                           self.exported.calibration, self.exported.node_names, fp16=bool(fp16),
                                           calibrated=calibrated, limits=self.limits)
            except BridgeError as e:
                report.warnings.append(f"the hub's activation ranges could not be measured: {e}")
                return e
        artifacts = [FP16Artifact(str(r), r.spec.clamps_fp16_constants, lanes()[r.target].notes) for r in fp16]
        report.warnings += fp16_warnings(ranges.fp16, artifacts)
        return ranges

    def _lane(self, lane: Lane, modes: tuple[str, ...], ranges) -> list[ArtifactRecord]:
        ex = self.exported
        options = self.options_by_lane[lane.name]
        converter = lane.converter(options)
        variant = converter != lane.convert  # another route: our preflight and stage blocks are the default's
        req = LaneRequest(
            hub_path=ex.hub_path, workdir=str(self.work / lane.name), name=self.ref.name, modes=modes,
            framework=ex.framework, inputs=tuple(ex.inputs), outputs=tuple(ex.outputs), calibration=ex.calibration,
            node_names=ex.node_names, options=options, source=self.ref, trust_code=self.options.trust_code,
            mean=self.options.calibration.mean, std=self.options.calibration.std,
            ranges=ranges.calibration if isinstance(ranges, Ranges) else None, hub_route=ex.route)
        Path(req.workdir).mkdir(exist_ok=True)
        start = time.perf_counter()
        try:
            if lane.in_process:
                from bridge.lanes import call

                arts: list[LaneArtifact] = call(converter, req)
            else:
                with self.progress.step(f"Converting to {lane.name} ({', '.join(modes)})"):
                    stage = Stage(f"{lane.name}-convert", "bridge.lanes:preflight_then_convert",
                                  () if variant else lane.convert_blocks)
                    arts = run_stage(stage, lane.name, None if variant else lane.preflight, converter, req,
                                     limits=self.limits)
        except ConversionError as e:
            error = ErrorRecord.of(e, f"{lane.name}-convert")
            arts = [LaneArtifact(mode=m, error=error, seconds=time.perf_counter() - start) for m in modes]
        return [self._finish(lane, a) for a in arts]

    def _finish(self, lane: Lane, art: LaneArtifact) -> ArtifactRecord:
        rec = ArtifactRecord(target=lane.name, quantization=art.mode, route=list(art.route), seconds=art.seconds,
                             warnings=art.warnings, details=art.details)
        if art.error:
            rec.error = art.error
            rec.parity = not_executed(f"conversion failed at stage {art.error.stage}")
            return rec
        # `publish` moves it into `out` after every lane, under the name checked before the run
        dest = self.work / STAGED / lane.filename(self.ref.name, art.mode)
        dest.parent.mkdir(exist_ok=True)
        os.replace(art.path, dest)
        rec.path, rec.bytes, rec.sha256 = dest.name, size(dest), sha256(dest)
        data = Path(f"{art.path}.data")
        if data.exists():  # tensors beside the graph (models over 2 GB)
            moved = dest.with_name(f"{dest.name}.data")
            os.replace(data, moved)
            rec.details["external_data"] = {"path": moved.name, "bytes": size(moved), "sha256": sha256(moved)}
            rec.bytes += rec.details["external_data"]["bytes"]
        ex = self.exported
        rec.bytes_per_param = round(rec.bytes / ex.params, 4) if ex.params else None
        rec.io = (art.io or IO.identity(ex.inputs, ex.outputs)).to_json()
        spec = lane.mode(art.mode)
        thresholds = thresholds_for(spec, self.names, self.threshold_overrides)
        is_hub = rec.sha256 == self.hub_sha and not rec.details.get("external_data")
        with self.progress.step(f"Checking parity of {dest.name}"):
            result = self._runtime(lane.runner, str(dest), rec.sha256, art.io, f"{lane.name}-runtime",
                                   blocks=lane.runtime_blocks)
        if isinstance(result, BridgeError):
            return runtime_failed(rec, result)
        runtime, outputs = result
        from_hub = not art.route or art.route[0] == "onnx"  # else stage metrics would blame a stage it never passed
        rec.parity = judge(actual=outputs, source=ex.source_outputs,
                           onnx=self.hub_outputs if from_hub and not is_hub else None, names=self.names,
                           thresholds=thresholds, runtime=runtime,
                           calibration=ex.calibration_origin if spec.calibrated else None, sizes=self._sizes(),
                           floor=self.floor)
        if is_hub:  # the hub itself: its parity is the source->onnx stage
            rec.parity.stages = {"source->onnx": rec.parity.outputs}
        return rec

    def _runtime(self, runner: str, path: str, digest: str, io, stage: str,
                 blocks: tuple[str, ...]) -> tuple[str, Feeds] | BridgeError:
        """An artifact's outputs on the parity samples, run once per (runtime, content): the ONNX
        artifact is the hub's bytes, so the hub's run is its run."""
        key = (runner, digest, io)
        if key not in self.outputs:
            try:
                self.outputs[key] = run_stage(Stage(stage, "bridge.validators.runners:run_samples", blocks), runner,
                                              path, self.exported.feeds, io,
                                              str(self.work / "data" / f"outputs-{len(self.outputs)}"),
                                              limits=self.limits)
            except BridgeError as e:
                self.outputs[key] = e
        return self.outputs[key]

    def _sizes(self) -> dict[str, list[int]]:
        return {f"{s.name}:{a}": [s.shape[a], second_size(s.shape[a])]
                for s in self.exported.inputs for a in s.dynamic}

