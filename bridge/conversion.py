"""`bridge convert`: source -> ONNX hub -> target lanes -> runners -> comparison -> report."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from bridge import environment
from bridge.arrays import Column
from bridge.calibration import CalibrationOptions
from bridge.converters import LANES
from bridge.converters.base import IO, ExportResult, LaneArtifact, LaneRequest
from bridge.converters.coreml.images import image_inputs
from bridge.converters.onnx.hub import data_file
from bridge.errors import BridgeError, ConversionError, UsageError
from bridge.files import scratch, sha256, size
from bridge.isolation import Limits, run_stage
from bridge.modes import CALIBRATED, Mode
from bridge.options import DEFAULT_TIMEOUT, check_limits, check_normalization
from bridge.parity import judge, not_executed, runtime_failed
from bridge.plan import Route, check_coreml_target, parse_threshold, plan_routes, thresholds_for
from bridge.progress import Progress
from bridge.publish import STAGED, OutputFolder
from bridge.report import ArtifactRecord, ErrorInfo, Report
from bridge.sources import Format, SourceRef, sniff
from bridge.tensors import parse_dynamic, parse_input, second_size


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
    tflite_layout: str = "nhwc"
    coreml_target: str | None = None  # iOS15..iOS18; None: iOS16, raised per mode as needed
    coreml_image_input: bool = False  # 4-D image inputs take 0-255 pixels (ImageType) in Core ML files
    coreml_route: str = "onnx"  # onnx (ours, from the hub) | direct (coremltools' own frontends)
    allow_flex: bool = False
    trust_code: bool = False
    timeout: float | None = DEFAULT_TIMEOUT
    max_memory: int | None = None
    verbose: bool = False

    def __post_init__(self):
        check_limits(timeout=self.timeout, max_memory=self.max_memory, samples=self.samples, seed=self.seed)
        check_normalization(self.calibration.mean, self.calibration.std, self.calibration.resize)
        for t in self.thresholds:
            parse_threshold(t)


def convert(source: str, options: ConvertOptions = ConvertOptions(), progress: Progress | None = None) -> Report:
    """Convert `source` to every requested target and mode; returns the report (also written as
    `report.json` in the output folder). Raises `UsageError` for bad usage before converting."""
    progress = progress or Progress()
    ref = sniff(source)
    if ref.format in (Format.TFLITE, Format.MLPACKAGE):
        raise UsageError(f"{source}: a {ref.format} file is an artifact; use `bridge validate SOURCE {source}`")
    routes = plan_routes(list(options.targets), list(options.quantize))
    check_coreml_target(routes, options.coreml_target)
    if options.coreml_route != "onnx":
        _check_direct_route(routes, ref, options)
    calibration = options.calibration
    if options.coreml_image_input:
        if not any(r.target == "coreml" for r in routes):
            raise UsageError("--coreml-image-input needs --target coreml")
        calibration = replace(calibration, pixels=True)
    overrides = tuple(parse_input(t) for t in options.inputs)
    dynamic = tuple(parse_dynamic(t) for t in options.dynamic)
    threshold_overrides = [parse_threshold(t) for t in options.thresholds]
    out = OutputFolder(Path(options.out) if options.out else Path("bridge-out") / ref.name,
                       frozenset(lane.suffix for lane in LANES.values()))
    limits = Limits(timeout=options.timeout, max_memory=options.max_memory, verbose=options.verbose)
    with out:
        out.check_destinations([f for r in routes for f in LANES[r.target].files(ref.name, r.mode)],
                               _inputs(ref, options))
        work = scratch(out.path)
        try:
            report = _convert(ref, source, routes, options, calibration, overrides, dynamic, threshold_overrides,
                              work, limits, progress)
            out.publish(report, work / STAGED)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return report


def _inputs(ref: SourceRef, options: ConvertOptions) -> list[Path]:
    """Everything the run reads: never written over."""
    paths = [ref.path]
    if options.calibration.path:
        paths.append(Path(options.calibration.path))
    return paths


def _convert(ref: SourceRef, source: str, routes: list[Route], options: ConvertOptions, calibration,
             overrides, dynamic, threshold_overrides, work: Path, limits: Limits, progress: Progress) -> Report:
    from bridge.converters.onnx.export import ExportRequest

    report = Report(source={"path": source, "format": str(ref.format)},
                    environment=environment.describe(options))
    with progress.step(f"Exporting {ref.name} to ONNX"):
        try:
            exported: ExportResult = run_stage(
                "export", "bridge.converters.onnx.export:export_source",
                ExportRequest(ref, str(work / f"{ref.name}.onnx"), overrides, dynamic, options.samples,
                              options.seed, options.trust_code, calibration),
                limits=limits)
        except ConversionError as e:
            # Nothing can be converted: every planned artifact carries the export's error.
            error = ErrorInfo(e.stage or "export", str(e), e.node, e.op_type)
            report.artifacts = [ArtifactRecord(r.target, r.mode.value, error=error,
                                               parity=not_executed("the source could not be exported"))
                                for r in routes]
            return report
    _describe_source(report, ref, exported)
    if not any(_calibrated(r.mode.value) for r in routes):
        report.warnings = [w for w in report.warnings if "--calibration" not in w]
    images = (image_inputs(exported.inputs, exported.framework, calibration.mean, calibration.std)
              if options.coreml_image_input else {})
    names = [o.name for o in exported.outputs]
    for o in threshold_overrides:
        thresholds_for(o.mode or routes[0].mode, names, [o])  # unknown output names: exit 2
    with progress.step("Running the ONNX hub on onnxruntime"):
        try:
            onnx_runtime, onnx_outputs = _run(LANES["onnx"].runner, exported.hub_path, exported.feeds,
                                              None, "onnx-runtime", limits, work / "data" / "onnx-hub")
        except BridgeError as e:  # the lanes still convert; stage metrics need the hub's outputs
            report.warnings.append(f"the ONNX hub could not run on onnxruntime: {e}")
            onnx_runtime, onnx_outputs = e, None
    # Before any lane converts: NaN/Inf from the source itself, activations fp16 cannot hold.
    report.warnings += _numerics(report, exported, routes, onnx_outputs is not None, limits, progress)
    run = _Run(ref, exported, onnx_outputs, work, limits, threshold_overrides, progress, images)
    for target in dict.fromkeys(r.target for r in routes):
        modes = [r for r in routes if r.target == target]
        report.artifacts += run.lane(target, modes, options, onnx_runtime)
    return report


DIRECT_FORMATS = (Format.PYTHON, Format.TORCHSCRIPT, Format.TORCH_EXPORT, Format.TORCH_PICKLE, Format.KERAS,
                  Format.H5)
DIRECT_CONVERT = "bridge.converters.coreml.direct:convert"


def _check_direct_route(routes: list[Route], ref: SourceRef, options: ConvertOptions) -> None:
    """`--coreml-route direct` takes what coremltools' own frontends take, and nothing it would
    silently do differently."""
    if options.coreml_route != "direct":
        raise UsageError(f"--coreml-route {options.coreml_route!r}: expected onnx or direct")
    if not any(r.target == "coreml" for r in routes):
        raise UsageError("--coreml-route direct needs --target coreml")
    if ref.format not in DIRECT_FORMATS:
        raise UsageError(f"--coreml-route direct: coremltools has no frontend for a {ref.format} source "
                         "(it reads PyTorch and TensorFlow/Keras models; ONNX takes the default route)")
    calibrated = sorted(r.mode.value for r in routes if r.target == "coreml" and Mode(r.mode) in CALIBRATED)
    if calibrated:
        raise UsageError(f"--coreml-route direct: coreml {', '.join(calibrated)} quantizes activations with "
                         "ranges only the ONNX route can calibrate on Linux")
    if options.coreml_image_input:
        raise UsageError("--coreml-image-input is built by the ONNX route; drop --coreml-route direct")


def _describe_source(report: Report, ref: SourceRef, exported: ExportResult) -> None:
    report.source.update({
        "framework": exported.framework,
        "format": exported.format,
        "inputs": [s.to_json() for s in exported.inputs],
        "outputs": [s.to_json() for s in exported.outputs],
        "shapes": "dynamic" if any(s.dynamic for s in exported.inputs) else "static",
        "params": exported.params,
        "onnx_opset": exported.opset,
    })
    report.warnings += exported.warnings
    report.environment["calibration"] = exported.calibration_origin


def _run(runner: str, path: str, feeds, io, stage: str, limits: Limits, out_dir: Path):
    return run_stage(stage, "bridge.validators.runners:run_samples", runner, path, feeds, io, str(out_dir),
                     limits=limits)


def _numerics(report: Report, exported: ExportResult, routes: list[Route], hub_runs: bool, limits: Limits,
              progress: Progress) -> list[str]:
    """Counts NaN/Inf in the source's outputs (`source.nonfinite`); when a route computes in fp16,
    measures the hub's activations in a child stage and warns about those beyond fp16's range."""
    from bridge.activations import computes_in_fp16, fp16_warnings
    from bridge.validators.compare import NonFinite

    counts = {o.name: NonFinite.of(Column(exported.source_outputs, o.name)) for o in exported.outputs}
    report.source["nonfinite"] = {n: c.to_json() for n, c in counts.items()}
    bad = "; ".join(f"{n}: {c}" for n, c in counts.items() if c)
    warnings = [f"the source itself yields NaN/Inf on the parity samples ({bad}): NaN and Inf never count as "
                "equal, so no artifact can pass parity on those outputs"] if bad else []
    fp16 = [str(r) for r in routes if computes_in_fp16(r.target, r.mode)]
    if not fp16 or not hub_runs:
        return warnings
    with progress.step("Measuring activations for fp16"):
        try:
            found = run_stage("fp16-ranges", "bridge.activations:fp16_overflows", exported.hub_path,
                              [exported.feeds, exported.calibration], exported.node_names, limits=limits)
        except BridgeError as e:
            return [*warnings, f"fp16 overflow check did not run: {e}"]
    return [*warnings, *fp16_warnings(found, fp16)]


@dataclass
class _Run:
    ref: SourceRef
    exported: ExportResult
    onnx_outputs: list
    work: Path
    limits: Limits
    threshold_overrides: list
    progress: Progress
    images: dict  # input name -> Pixels, for --coreml-image-input

    @property
    def names(self) -> list[str]:
        return [o.name for o in self.exported.outputs]

    def lane(self, target: str, routes: list[Route], options: ConvertOptions,
             onnx_runtime: str | BridgeError) -> list[ArtifactRecord]:
        lane = LANES[target]
        if lane.convert is None:  # the hub itself; the other lanes still read it from the work dir
            hub = Path(self.exported.hub_path)
            copy = self.work / "artifact" / hub.name
            copy.parent.mkdir()
            for f in (data_file(hub), hub):
                if f.exists():
                    shutil.copyfile(f, copy.parent / f.name)
            art = LaneArtifact(mode=routes[0].mode.value, path=str(copy), route=self.exported.route)
            if self.onnx_outputs is None:  # the hub's run above failed: that is this artifact's verdict
                return [self._finish(target, art, failure=onnx_runtime)]
            return [self._finish(target, art, outputs=self.onnx_outputs, runtime=onnx_runtime)]
        req = LaneRequest(
            hub_path=self.exported.hub_path, workdir=str(self.work), name=self.ref.name,
            modes=tuple(r.mode.value for r in routes), framework=self.exported.framework,
            inputs=tuple(self.exported.inputs), outputs=tuple(self.exported.outputs),
            calibration=self.exported.calibration, node_names=self.exported.node_names,
            options={"tflite_layout": options.tflite_layout, "allow_flex": options.allow_flex,
                     "coreml_target": options.coreml_target, "coreml_images": self.images,
                     "source": self.ref, "trust_code": options.trust_code},
        )
        start = time.perf_counter()
        with self.progress.step(f"Converting to {target} ({', '.join(req.modes)})"):
            try:
                convert = DIRECT_CONVERT if target == "coreml" and options.coreml_route == "direct" else lane.convert
                arts: list[LaneArtifact] = run_stage(f"{target}-convert", convert, req, limits=self.limits)
            except ConversionError as e:
                err = {"stage": e.stage, "message": str(e), "node": e.node, "op_type": e.op_type}
                arts = [LaneArtifact(mode=r.mode.value, error=err, seconds=time.perf_counter() - start)
                        for r in routes]
        return [self._finish(target, a) for a in arts]

    def _finish(self, target: str, art: LaneArtifact, outputs=None, runtime: str | None = None,
                failure: BridgeError | None = None) -> ArtifactRecord:
        rec = ArtifactRecord(target=target, quantization=art.mode, route=list(art.route), seconds=art.seconds,
                             warnings=art.warnings, details=art.details)
        if art.error:
            rec.error = ErrorInfo(**art.error)
            rec.parity = not_executed(f"conversion failed at stage {art.error['stage']}")
            return rec
        # `publish` moves it into `out` after every lane, under the name checked before the run
        dest = self.work / STAGED / LANES[target].filename(self.ref.name, Mode(art.mode))
        dest.parent.mkdir(exist_ok=True)
        os.replace(art.path, dest)
        rec.path = dest.name
        rec.bytes = size(dest)
        rec.sha256 = sha256(dest)
        if target == "onnx" and data_file(art.path).exists():  # tensors beside the graph (models over 2 GB)
            os.replace(data_file(art.path), data_file(dest))
            data = data_file(dest)
            rec.details["external_data"] = {"path": data.name, "bytes": size(data), "sha256": sha256(data)}
            rec.bytes += rec.details["external_data"]["bytes"]
        rec.bytes_per_param = round(rec.bytes / self.exported.params, 4) if self.exported.params else None
        rec.io = art.io.to_json() if art.io else _hub_io(self.exported)
        thresholds = thresholds_for(Mode(art.mode), self.names, self.threshold_overrides)
        if failure is not None:
            return runtime_failed(rec, failure)
        if outputs is None:
            with self.progress.step(f"Checking parity of {dest.name}"):
                try:
                    runtime, outputs = _run(LANES[target].runner, str(dest), self.exported.feeds, art.io,
                                            f"{target}-runtime", self.limits,
                                            self.work / "data" / f"{target}-{art.mode}")
                except BridgeError as e:
                    return runtime_failed(rec, e)
        rec.parity = judge(actual=outputs, source=self.exported.source_outputs,
                           onnx=self.onnx_outputs if target != "onnx" and _from_hub(art) else None,
                           names=self.names,
                           thresholds=thresholds, runtime=runtime,
                           calibration=self.exported.calibration_origin if _calibrated(art.mode) else None,
                           sizes=_sizes(self.exported))
        if target == "onnx":
            rec.parity.stages = {"source->onnx": rec.parity.outputs}
        return rec


def _from_hub(art: LaneArtifact) -> bool:
    """Whether the artifact was converted from the hub (else stage metrics would blame a stage it never passed)."""
    return not art.route or art.route[0] == "onnx"


def _calibrated(mode: str) -> bool:
    return Mode(mode) in CALIBRATED


def _hub_io(exported: ExportResult) -> dict:
    return IO.identity(exported.inputs, exported.outputs).to_json()


def _sizes(exported: ExportResult) -> dict[str, list[int]]:
    return {f"{s.name}:{a}": [s.shape[a], second_size(s.shape[a])] for s in exported.inputs for a in s.dynamic}
