"""`bridge validate`: parity of artifacts made anywhere (our lanes, TensorFlow's converter, other
tools) against a source. Each artifact's mode is inferred from its tensor types."""

from __future__ import annotations

import itertools
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from bridge import environment
from bridge.base.bindings import IO, Binding, Pixels
from bridge.base.errors import BridgeError, UnsafeInput, UsageError
from bridge.base.files import sha256, size
from bridge.base.lane import ExportRequest, ExportResult, Lane
from bridge.base.samples import CalibrationOptions
from bridge.base.sources import sniff
from bridge.base.tensors import TensorSpec, parse_dynamic, parse_input
from bridge.lanes import lanes
from bridge.localization import Localizer, When
from bridge.options import DEFAULT_TIMEOUT, check_limits, check_normalization
from bridge.parity import floor_json, judge, noise_floor, runtime_failed
from bridge.plan import parse_threshold, thresholds_for
from bridge.progress import Progress
from bridge.publish import check_distinct, check_report_destination
from bridge.report import ArtifactRecord, Report
from bridge.reporters.html import HtmlReporter
from bridge.reporters.json import JsonReporter
from bridge.reporters.junit import JUnitReporter
from bridge.stages import Fault, Limits, Stage, run_stage

EXPORT = Stage("export", "bridge.converters.onnx.export:export_source")


@dataclass(frozen=True)
class ValidateOptions:
    inputs: tuple[str, ...] = ()
    dynamic: tuple[str, ...] = ()
    thresholds: tuple[str, ...] = ()
    report: str | None = None  # report.json here
    html: str | None = None  # the same report as a page
    junit: str | None = None  # the verdicts as JUnit XML
    samples: int = 8
    seed: int = 0
    trust_code: bool = False
    timeout: float | None = DEFAULT_TIMEOUT
    max_memory: int | None = None
    verbose: bool = False
    data: CalibrationOptions = CalibrationOptions()  # parity_path (--parity-data) with --mean/--std/--resize
    localize: When = When.on_failure  # per-layer localisation: of failing artifacts, of every one, or none

    def __post_init__(self):
        check_limits(timeout=self.timeout, max_memory=self.max_memory, samples=self.samples, seed=self.seed)
        check_normalization(self.data.mean, self.data.std, self.data.resize)
        for t in self.thresholds:
            parse_threshold(t)


def validate(source: str, artifacts: list[str], options: ValidateOptions = ValidateOptions(),
             progress: Progress | None = None, *, faults: Sequence[Fault] = (),
             command_line: Sequence[str] | None = None) -> Report:
    """Check each artifact against `source`; returns the report (also written to `options.report`,
    `options.html` and `options.junit` when given). `command_line` is recorded in the report."""
    report = Report(command="validate", source={"path": source}, command_line=list(command_line or ()) or None)
    progress = progress or Progress()
    ref = sniff(source)
    found = [(Path(a), lane_of(a)) for a in artifacts]
    outputs = {"--report": options.report, "--html": options.html, "--junit": options.junit}
    check_distinct(outputs)
    data = [Path(options.data.parity_path)] if options.data.parity_path else []
    for flag, path in outputs.items():
        if path:
            check_report_destination(Path(path), [ref.path, *(p for p, _ in found), *data], flag)
    overrides = [parse_threshold(t) for t in options.thresholds]
    limits = Limits(timeout=options.timeout, max_memory=options.max_memory, verbose=options.verbose,
                    faults=tuple(faults))
    work = Path(tempfile.mkdtemp(prefix="bridge-validate-"))
    report.source.update({"name": ref.name, "format": str(ref.format)})
    report.environment = environment.describe(options)
    try:
        # Artifacts are read first: one unsafe to read stops the run before the source runs.
        described = [_describe(path, lane, limits) for path, lane in found]
        with progress.step(f"Running the source {ref.name}"):
            exported: ExportResult = run_stage(
                EXPORT, ExportRequest(ref, str(work / "hub.onnx"), tuple(parse_input(t) for t in options.inputs),
                                      tuple(parse_dynamic(t) for t in options.dynamic), options.samples,
                                      options.seed, options.trust_code, options.data),
                limits=limits)
        report.source.update({"framework": exported.framework, "inputs": [s.to_json() for s in exported.inputs],
                              "outputs": [s.to_json() for s in exported.outputs]})
        report.samples["parity"] = exported.parity_origin.to_json()
        names = [o.name for o in exported.outputs]
        floor = noise_floor(exported.source_outputs, exported.nudged_outputs, names)
        if floor:
            report.source["noise_floor"] = floor_json(floor)
        localizer = Localizer(exported.hub_path, exported.feeds, exported.node_names, exported.framework,
                              work / "localize", limits, progress, overrides, When(options.localize))
        for (path, lane), desc in zip(found, described, strict=True):
            start = time.perf_counter()
            with progress.step(f"Checking parity of {path.name}"):
                rec, io = _check(path, lane, desc, exported, names, overrides, limits,
                                 work / "data" / f"artifact-{len(report.artifacts)}", floor)
            rec.parity.seconds = time.perf_counter() - start
            if localizer.wanted(rec.parity) and rec.error is None and rec.parity.status != "not_executed":
                localizer.attach(rec.parity, lane, lane.mode(rec.quantization), str(path), io)
            report.artifacts.append(rec)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report.finish()
    doc = report.to_json()
    if options.html:  # the page first: report.json, when asked for, is written last, as by convert
        HtmlReporter().write(doc, Path(options.html))
        report.written["page"] = Path(options.html)
    if options.junit:
        JUnitReporter().write(doc, Path(options.junit))
        report.written["junit"] = Path(options.junit)
    if options.report:
        JsonReporter().write(report, Path(options.report))
    return report


def lane_of(artifact: str) -> Lane:
    """The lane whose artifacts look like this file (each lane recognizes its own, from content)."""
    path = Path(artifact)
    try:
        ref, unknown = sniff(artifact), None  # built-in formats get their checks here (ONNX tensors, packages)
    except UnsafeInput:
        raise
    except UsageError as e:  # maybe a format only a plug-in lane knows: its recognizer decides
        ref, unknown = None, e
    for lane in lanes().values():
        if lane.recognize is not None and lane.recognize(path):
            return lane
    if unknown is not None:
        raise unknown
    raise UsageError(f"{artifact}: a {ref.format} file is not an artifact any installed lane runs "
                     f"({', '.join(lanes())})")


def _describe(path: Path, lane: Lane, limits: Limits) -> dict | BridgeError | None:
    """The artifact's interface and mode, read in a child; the error, if it cannot be read (its
    record says so later); an artifact unsafe to read is refused here, with exit 2."""
    if lane.describe is None:
        return None
    try:
        return run_stage(Stage(f"{lane.name}-inspect", "bridge.lanes:call", lane.runtime_blocks), lane.describe,
                         str(path), limits=limits)
    except UnsafeInput:
        raise
    except BridgeError as e:
        return e


def _check(path: Path, lane: Lane, desc: dict | BridgeError | None, exported: ExportResult, names: list[str],
           overrides, limits: Limits, out_dir: Path, floor: dict) -> tuple[ArtifactRecord, IO | None]:
    rec = ArtifactRecord(target=lane.name, quantization="unknown", path=str(path), bytes=size(path),
                         sha256=sha256(path))
    try:
        if isinstance(desc, BridgeError):
            raise desc
        if desc is not None:
            io = IO(match(exported.inputs, desc["inputs"]), match(exported.outputs, desc["outputs"]))
            rec.quantization = desc["mode"]
        else:  # a lane that cannot tell: its first mode, the artifact's tensors as the source's
            io = None
            rec.quantization = lane.default[0]
        rec.io = io.to_json() if io else IO.identity(exported.inputs, exported.outputs).to_json()
        stage = Stage(f"{lane.name}-runtime", "bridge.validators.runners:run_samples", lane.runtime_blocks)
        runtime, outputs = run_stage(stage, lane.runner, str(path), exported.feeds, io, str(out_dir), limits=limits)
    except UnsafeInput:  # an artifact unsafe to read: refused whole (exit 2), like sniff's refusals
        raise
    except BridgeError as e:
        return runtime_failed(rec, e), None
    spec = lane.mode(rec.quantization)
    thresholds = thresholds_for(spec, names, overrides)
    rec.parity = judge(actual=outputs, source=exported.source_outputs, onnx=None, names=names,
                       thresholds=thresholds, runtime=runtime, inputs=exported.parity_origin.origin, calibration=None,
                       sizes={}, floor=floor)
    return rec, io


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower().split(":")[0])


def match(specs: list[TensorSpec], tensors: list[dict]) -> tuple[Binding, ...]:
    """Pair source tensors with an artifact's by name (ignoring punctuation and case), else by order
    when the counts agree; find each pair's layout permutation from the shapes."""
    by_key = {_key(t["name"]): t for t in tensors}
    if len(specs) != len(tensors):
        raise UsageError(f"the artifact has {len(tensors)} tensors where the source has {len(specs)}")
    named = [by_key.get(_key(s.name)) for s in specs]
    pairs = list(zip(specs, named if all(named) else tensors, strict=True))
    out = []
    for spec, t in pairs:
        perm = find_perm(spec.shape, tuple(t["shape"]))
        if perm is False:
            raise UsageError(f"artifact tensor {t['name']} {t['shape']} does not fit source tensor "
                             f"{spec.name} {list(spec.shape)}")
        q, px = t.get("quantization"), t.get("pixels")
        if t["dtype"] == "image" and not px:
            raise UsageError(f"artifact input {t['name']} is an image of unknown scale and mean "
                             "(not made by `bridge convert --coreml-image-input`)")
        pixels = Pixels(tuple(px["mean"]), tuple(px["std"]), px["color_layout"]) if px else None
        out.append(Binding(spec.name, t["name"], tuple(t["shape"]), t["dtype"], perm,
                           "image" if pixels else "channel-last" if perm else "source", tuple(q) if q else None,
                           pixels))
    return tuple(out)


def find_perm(source: tuple, artifact: tuple):
    """None when the shapes agree, else the permutation (channel-last first), else False."""
    def fits(p):
        return all(a in (-1, source[i]) for a, i in zip(artifact, p, strict=True))

    if len(source) != len(artifact):
        return False
    identity = tuple(range(len(source)))
    if fits(identity):
        return None
    candidates = [(0, *range(2, len(source)), 1)] if len(source) >= 3 else []
    candidates += list(itertools.permutations(range(len(source)))) if len(source) <= 5 else []
    for p in candidates:
        if fits(p):
            return tuple(p)
    return False


def debug(source: str, artifact: str, options: ValidateOptions = ValidateOptions(),
          progress: Progress | None = None, *, command_line: Sequence[str] | None = None) -> Report:
    """`bridge debug`: validate one artifact and localise it layer by layer, whether it passes or not."""
    lane = lane_of(artifact)
    if lane.tracer is None:
        raise UsageError(f"{artifact}: the {lane.name} lane declares no tracer, so its artifacts cannot be "
                         "localised layer by layer")
    return validate(source, [artifact], replace(options, localize=When.always), progress,
                    command_line=command_line)
