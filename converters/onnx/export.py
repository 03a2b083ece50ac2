"""The export stage: load the source, write the hub ONNX, run the source on the parity samples.

Runs in a child process (`bridge.stages.run_stage`); the per-framework modules (`torch_source`,
`keras_source`, `onnx_source`) load and export, `finish` does what every source shares.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence

import numpy as np

from bridge.base.arrays import Feed, Feeds, FeedWriter, write_feeds
from bridge.base.errors import UsageError
from bridge.base.lane import ExportRequest, ExportResult
from bridge.base.samples import split_samples
from bridge.base.sources import Format
from bridge.base.tensors import TensorSpec
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
    samples = split_samples(req.calibration, inputs, channel_last, req.samples, req.seed)
    origin, parity_origin = samples.origin, samples.parity_origin
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
    nudged = _nudged_outputs(feeds, inputs, run_source, req, [o.name for o in model.graph.output])
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
        parity_origin=parity_origin,
        nudged_outputs=nudged,
        params=hub.param_count(model),
        activation_bytes=hub.activation_bytes(model),
        route=(*route, "onnxslim"),
        warnings=warnings,
        node_names=names,
        opset=hub.opset_of(model),
        folding=folding.to_json(),
    )


NOISE_FLOOR_SAMPLES = 4


def _nudged_outputs(feeds: Sequence[Feed], inputs: list[TensorSpec], run_source: Callable[[Feed], Feed],
                    req: ExportRequest, names: list[str]) -> Feeds | None:
    """The source's outputs on its first parity samples with every float input value moved one
    representable step up or down (seeded): a conversion cannot be expected to match the source
    more closely than the source matches itself under that change."""
    floats = {s.name for s in inputs if s.dtype.startswith("float")}
    if not floats:
        return None
    rng = np.random.default_rng(req.seed + 3)
    writer = FeedWriter(req.data / "source-nudged", names)
    for feed in feeds[:NOISE_FLOOR_SAMPLES]:
        moved = {}
        for k, v in feed.items():
            if k in floats:
                v = np.asarray(v)
                toward = np.where(rng.random(v.shape) < 0.5, -np.inf, np.inf).astype(v.dtype)
                moved[k] = np.asarray(np.nextafter(v, toward), dtype=v.dtype)
            else:
                moved[k] = v
        writer.append(run_source(moved))
    return writer.close()


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
