"""The export stage: load the source, write the hub ONNX, run the source on the parity samples.

Runs in a child process (`bridge.stages.run_stage`); the per-framework modules (`torch_source`,
`keras_source`, `onnx_source`) load and export, `finish` does what every source shares.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import numpy as np

from bridge.base.arrays import Feed, FeedWriter, write_feeds
from bridge.base.errors import UsageError
from bridge.base.lane import ExportRequest, ExportResult
from bridge.base.samples import split_samples
from bridge.base.sources import Format
from bridge.base.tensors import TensorSpec, second_size, synthetic_samples
from bridge.converters.onnx import hub

OPSET = 17  # highest opset onnx2tf, tf2onnx and our Core ML converter all lower well


_BY_FORMAT = {
    Format.ONNX: "onnx_source",
    Format.TORCHSCRIPT: "torch_source",
    Format.TORCH_EXPORT: "torch_source",
    Format.TORCH_PICKLE: "torch_source",
    Format.KERAS: "keras_source",
    Format.H5: "keras_source",
    Format.SAVED_MODEL: "keras_source",
}


def export_source(req: ExportRequest) -> ExportResult:
    """Entry point of the export stage."""
    if req.source.format is Format.PYTHON:
        from bridge.converters.onnx.entrypoint import load_entrypoint

        model, example = load_entrypoint(req.source)
        module = _framework_module(model)
        return importlib.import_module(f"bridge.converters.onnx.{module}").export_model(model, example, req)
    module = _BY_FORMAT.get(req.source.format)
    if module is None:
        raise UsageError(f"{req.source.text}: a {req.source.format} file is an artifact, not a source")
    return importlib.import_module(f"bridge.converters.onnx.{module}").export_file(req)


def _framework_module(model: object) -> str:
    roots = {c.__module__.split(".")[0] for c in type(model).__mro__}
    if "torch" in roots:
        return "torch_source"
    if roots & {"keras", "tf_keras", "tensorflow"}:
        return "keras_source"
    raise UsageError(f"the entrypoint returned a {type(model).__module__}.{type(model).__name__}, "
                     "not a torch.nn.Module or keras.Model")


MAX_FEED_BYTES = 4 << 30  # every parity sample together; each is held by several stages


def parity_feeds(specs: list[TensorSpec], count: int, seed: int) -> list[Feed]:
    """The parity samples: `count` at the given sizes, and `count` more with every dynamic axis at
    a second size, so a dynamic artifact is proven at two sizes."""
    check_feed_size(specs, count)
    feeds = synthetic_samples(specs, count, seed).feeds
    if any(s.dynamic for s in specs):
        grown = [_grow(s) for s in specs]
        feeds += synthetic_samples(grown, count, seed + 7919).feeds
    return feeds


def check_feed_size(specs: list[TensorSpec], count: int) -> None:
    """Inputs declared too large to sample (a hostile or mistaken shape) are bad usage, not an
    out-of-memory crash minutes later."""
    grown = [_grow(s) for s in specs] if any(s.dynamic for s in specs) else []
    total = count * sum(s.nbytes for s in [*specs, *grown])
    if total > MAX_FEED_BYTES:
        biggest = max(specs, key=lambda s: s.nbytes)
        raise UsageError(f"{count} parity samples of these inputs take {total / (1 << 30):.1f} GiB (the limit is "
                         f"{MAX_FEED_BYTES >> 30} GiB); input {biggest.name} is {list(biggest.shape)}: give a smaller "
                         "shape with --input, or fewer --samples")


def _grow(s: TensorSpec) -> TensorSpec:
    for axis in s.dynamic:
        s = s.with_size(axis, second_size(s.shape[axis]))
    return s


def finish(model, req: ExportRequest, *, framework: str, inputs: list[TensorSpec],
           run_source: Callable[[Feed], Feed], route: tuple[str, ...],
           warnings: list[str] | None = None) -> ExportResult:
    """Finalize the hub graph, then run the source on the parity samples."""
    warnings = list(warnings or [])
    model, names, hub_warnings, folding = hub.finalize(model, req.hub_path, req.external_data_bytes, inputs)
    warnings += hub_warnings
    kept = {i.name for i in model.graph.input}
    inputs = [s for s in inputs if s.name in kept]
    channel_last = framework in ("keras", "tensorflow")
    samples = split_samples(req.calibration, inputs, channel_last,
                            parity_feeds(inputs, req.samples, req.seed), req.seed)
    origin = samples.origin
    warnings += samples.warnings
    feeds = write_feeds(req.data / "feeds", samples.parity)
    calibration = write_feeds(req.data / "calibration", samples.calibration)
    del samples
    writer = FeedWriter(req.data / "source", [o.name for o in model.graph.output])
    first = None
    for feed in feeds:  # one sample in memory at a time, whatever the outputs weigh
        out = run_source(feed)
        missing = [o.name for o in model.graph.output if o.name not in out]
        if missing:
            raise UsageError(f"the source produced no output named {', '.join(missing)}")
        writer.append(out)
        first = first or {n: (a.shape, str(a.dtype)) for n, a in out.items()}
        del out
    source_outputs = writer.close()
    outputs = [TensorSpec(o.name, *first[o.name]) for o in model.graph.output]
    return ExportResult(
        framework=framework,
        format=str(req.source.format),
        hub_path=req.hub_path,
        inputs=inputs,
        outputs=outputs,
        feeds=feeds,
        source_outputs=source_outputs,
        calibration=calibration,
        calibration_origin=origin,
        params=hub.param_count(model),
        route=(*route, "onnxslim"),
        warnings=warnings,
        node_names=names,
        opset=hub.opset_of(model),
        hub=folding.to_json(),
    )


def example_tuple(example) -> tuple:
    """Example inputs as given by an entrypoint (one tensor, a tuple/list, or a dict by name)."""
    if isinstance(example, dict):
        return tuple(example.values())
    if isinstance(example, (tuple, list)):
        return tuple(example)
    return (example,)


def int_range(x: np.ndarray) -> tuple[int, int] | None:
    """Integer example inputs bound the synthetic ones (token ids must stay in the vocabulary)."""
    if x.dtype.kind not in "iu" or x.size == 0:
        return None
    return int(x.min()), int(x.max()) + 1
