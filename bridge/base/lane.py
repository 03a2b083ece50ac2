"""What a target lane is, and the values that cross between the orchestrator and the lanes.

A lane is one package under `converters/` (or any installed package) that exposes a `Lane` through
the `bridge.lanes` entry-point group. It declares its name, its modes table, an options dataclass
whose fields become its `bridge convert` option group, and where its preflight, converter, runner
and describer live ("module:function" paths, imported only in the stage child that runs them, so
declaring a lane imports no framework).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bridge.base.arrays import Feed
from bridge.base.bindings import IO
from bridge.base.errors import ErrorRecord, UsageError
from bridge.base.modes import ModeSpec
from bridge.base.samples import CalibrationOptions, SampleOrigin
from bridge.base.sources import SourceRef
from bridge.base.tensors import InputOverride, TensorSpec


def option(help: str, *, flag: str | None = None, **kwargs) -> dict:
    """Metadata for a field of a lane's options dataclass: its help text and, when it differs from
    `--<lane>-<field>`, its command-line flag."""
    return {"help": help, "flag": flag, **kwargs}


@dataclass(frozen=True)
class LaneCheck:
    """What a lane's `check` sees before anything runs: it raises `UsageError` for combinations it
    cannot honour (a deployment target too old for a mode, a route that cannot read the source)."""

    modes: tuple[str, ...]
    options: object
    source: SourceRef


@dataclass(frozen=True)
class Widen:
    """A lane's wider search step: the same kept layers, kept more (its `remix` given wide=True).
    TFLite keeps every reader of the kept layers too, so none reads their output rounded to int8;
    Core ML gives the kept layers their float16 weights back (a narrow step keeps their int8 ones)."""

    key: str  # the step's flag in the report ("all_readers")
    # False: each failing count is tried again wide at once. True: a second search, wide, only once
    # the narrow one failed keeping every ranked layer (the wide step costs bytes the narrow one does not)
    tier: bool = False
    # A lane whose wider step is per count (`tier` False) may have a tier as well: the flag (its name
    # in the report) of a second search, run as a tiered lane's wide one, each of its counts widened
    # too; its `remix` is then given both flags. TFLite's "float32_weights": a first-tier kept layer
    # keeps int8 weights for the runtime's hybrid kernels.
    second: str = ""


@dataclass(frozen=True)
class Lane:
    name: str
    suffix: str  # of its artifacts: .tflite, .mlpackage (a folder)...
    modes: tuple[ModeSpec, ...]
    default: tuple[str, ...]
    convert: str  # "module:function": LaneRequest -> list[LaneArtifact], run in the lane's child stage
    runner: str  # "module:Class" with load(path) / infer(feed), run in a runtime child stage
    describe: str | None = None  # "module:function": path -> {"inputs", "outputs", "mode"} (bridge validate)
    # "module:Class" that runs an artifact keeping every intermediate tensor (per-layer localisation,
    # `bridge.validators.localisation.graph.Tracer`); None: the lane's artifacts cannot be localised
    tracer: str | None = None
    preflight: str | None = None  # "module:function": (hub_path, node_names, options) -> list[Unsupported]
    # "module:function": (base, keep, node_names, out path) -> LaneArtifact. A mixed mode's search step
    # made in-process from its first step's files (the first step's details hold `base`) instead of
    # converting again; None: every step converts
    remix: str | None = None
    # what the search's wider step is (`remix` given wide=True) and when it is tried; None: no wider step.
    # A tiered lane's first step may list every layer it can keep (`units` in its MIXED_BASE details)
    widen: Widen | None = None
    # the same for `bridge inspect`, where a lane whose preflight is quick by design (thorough only
    # once something is found) checks every node; None: `preflight`
    inspect_preflight: str | None = None
    recognize: Callable[[Path], bool] | None = None  # is this file one of our artifacts? (cheap, no frameworks)
    options: type | None = None  # frozen dataclass; each field is an option of `bridge convert`
    variants: Mapping[str, str] = field(default_factory=dict)  # another convert, chosen by `select`
    select: Callable[[object], str | None] | None = None  # options -> variant name, or None for `convert`
    check: Callable[[LaneCheck], None] | None = None
    pixel_inputs: Callable[[object], bool] | None = None  # options -> whether image inputs take 0-255 pixels
    convert_blocks: tuple[str, ...] = ()  # frameworks its convert stage must never import (faster start)
    runtime_blocks: tuple[str, ...] = ()  # likewise for its runtime stage
    notes: Mapping[str, str] = field(default_factory=dict)  # lane facts warnings quote ("fp16-activations", ...)
    requires: tuple[str, ...] = ()  # import names the lane needs (bridge doctor)
    extra: str = ""  # the pip extra that installs them
    in_process: bool = False  # its convert is framework-free and cheap: no child stage
    # What its convert and runtime stages are expected to peak at: (bytes, multiple of the hub's
    # bytes); None: the orchestrator's defaults, sized for lanes that load TensorFlow or coremltools.
    convert_memory: tuple[int, float] | None = None
    runtime_memory: tuple[int, float] | None = None
    # Modules its convert stage imports (none blocked by `convert_blocks`), and what a child holding
    # them takes: that child may start while the export runs, where the memory allows it.
    convert_preload: tuple[str, ...] = ()
    convert_preload_memory: int = 0
    # the same for its runtime stage (its parity runs), whose children may start while it converts
    runtime_preload: tuple[str, ...] = ()
    runtime_preload_memory: int = 0

    def mode(self, name: str) -> ModeSpec:
        for m in self.modes:
            if m.name == name:
                return m
        raise UsageError(f"{self.name} has no mode {name}; valid: {', '.join(self.mode_names)}")

    @property
    def mode_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.modes)

    def filename(self, stem: str, mode: str) -> str:
        """What an artifact is called in --out: known before anything converts, so a run that
        would overwrite a user's file is refused up front."""
        return f"{stem}{self.suffix}" if self.in_process else f"{stem}_{mode}{self.suffix}"

    def files(self, stem: str, mode: str) -> list[str]:
        """Every file the artifact may ship (a file over 2 GB may carry `<name>.data`)."""
        name = self.filename(stem, mode)
        return [name, f"{name}.data"]

    def converter(self, options: object) -> str:
        variant = self.select(options) if self.select else None
        return self.variants[variant] if variant else self.convert

    def make_options(self, given: object = None) -> object:
        """The lane's options from an instance, a dict of field values, or nothing (defaults)."""
        if self.options is None:
            return None
        if given is None:
            return self.options()
        if isinstance(given, self.options):
            return given
        try:
            return self.options(**dict(given))
        except TypeError as e:
            fields = ", ".join(f.name for f in dataclasses.fields(self.options))
            raise UsageError(f"{self.name} options: {e} (fields: {fields})") from None


@dataclass(frozen=True)
class Unsupported:
    """An op (and attribute combination) a lane refuses, with the nodes that use it."""

    op_type: str
    nodes: tuple[str, ...]
    reason: str = ""

    def __str__(self) -> str:
        shown = ", ".join(self.nodes[:5]) + (f" and {len(self.nodes) - 5} more" if len(self.nodes) > 5 else "")
        return f"{self.op_type} ({shown}{'; ' + self.reason if self.reason else ''})"

    def to_json(self) -> dict:
        return {"op_type": self.op_type, "nodes": list(self.nodes), "reason": self.reason}


MIXED_BASE = "_mixed_base"  # in a mixed mode's first search step's details: what the lane's `remix` reads


@dataclass
class LaneArtifact:
    """One mode's result from a lane: a file (or folder) in the work dir, or the error that stopped it."""

    mode: str
    path: str | None = None
    io: IO | None = None
    route: tuple[str, ...] = ()
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    error: ErrorRecord | None = None
    details: dict = field(default_factory=dict)  # lane-specific report fields (flex ops, ...)
    # hub tensor -> the artifact's tensor name, where the converter reports it (per-layer localisation
    # trusts it over names and values)
    correspondence: dict[str, str] = field(default_factory=dict)


@dataclass
class ExportResult:
    """What the export stage learned from the source and wrote to the hub."""

    framework: str  # torch | keras | tensorflow | onnx
    format: str
    hub_path: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    feeds: Sequence[Feed]  # the parity samples (`bridge.base.arrays.Feeds` on disk)
    source_outputs: Sequence[Feed]  # the source's outputs on `feeds`
    calibration: Sequence[Feed]
    calibration_origin: SampleOrigin
    params: int
    # The source's outputs on the first few parity samples with every float input moved by one
    # rounding step: how much the source itself moves (its noise floor). None: no float input.
    nudged_outputs: Sequence[Feed] | None = None
    route: tuple[str, ...] = ()  # e.g. ("torch", "torch.onnx(legacy)", "onnxslim")
    warnings: list[str] = field(default_factory=list)
    node_names: dict[str, str] = field(default_factory=dict)  # sanitized -> original
    opset: int = 0
    parity_origin: SampleOrigin | None = None  # of `feeds`
    folding: dict = field(default_factory=dict)  # what the hub fixed and folded (report.json's `hub.folding`)
    activation_bytes: int | None = None  # the hub's float tensors on one sample (None: a shape not static)


@dataclass(frozen=True)
class ExportRequest:
    source: SourceRef
    hub_path: str
    overrides: tuple[InputOverride, ...] = ()
    dynamic: tuple[tuple[str, int], ...] = ()
    samples: int = 8
    seed: int = 0
    trust_code: bool = False
    calibration: CalibrationOptions = CalibrationOptions()
    data_dir: str | None = None  # where the samples go (default: `data/` beside the hub)
    external_data_bytes: int | None = None  # hubs larger than this keep tensors beside the graph (default ~2 GB)

    @property
    def data(self) -> Path:
        return Path(self.data_dir) if self.data_dir else Path(self.hub_path).parent / "data"


@dataclass(frozen=True)
class LaneRequest:
    """Everything a lane's `convert` needs, picklable for its child process."""

    hub_path: str
    workdir: str
    name: str  # artifact file stem
    modes: tuple[str, ...]
    framework: str  # of the source: decides the source layout of image inputs
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    calibration: Sequence[Feed] = ()  # `bridge.base.arrays.Feeds`: read when used
    node_names: dict[str, str] = field(default_factory=dict)  # hub node name -> original
    options: object = None  # the lane's own options dataclass
    source: SourceRef | None = None  # for a route that reloads the source itself
    trust_code: bool = False
    mean: tuple[float, ...] = ()  # --mean / --std: how image inputs are normalized
    std: tuple[float, ...] = ()
    ranges: Mapping[str, tuple[float, float]] | None = None  # the hub's activation ranges on calibration data
    hub_route: tuple[str, ...] = ()  # how the hub was made, e.g. ("torch", "torch.onnx(legacy)", "onnxslim")


def for_each_mode(modes: Sequence[str], make: Callable[[str, LaneArtifact], None], *, stage: str,
                  route: tuple[str, ...], shared_seconds: float = 0.0) -> list[LaneArtifact]:
    """The per-mode loop every lane runs: `make(mode, artifact)` fills in one artifact (path, io,
    details, warnings); whatever it raises becomes that mode's error, and the other modes go on."""
    import time

    results = []
    for mode in modes:
        start = time.perf_counter()
        art = LaneArtifact(mode=mode, route=route)
        try:
            make(mode, art)
        except Exception as e:  # noqa: BLE001 - converters raise anything; one failing mode never stops the others
            art.error = ErrorRecord.of(e, stage)
            art.path = None
        art.seconds = shared_seconds + time.perf_counter() - start
        if shared_seconds:
            art.details["shared_seconds"] = round(shared_seconds, 3)
        results.append(art)
    return results
