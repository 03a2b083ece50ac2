"""PyTorch sources -> hub ONNX.

Exporter mode: the TorchScript-based exporter (`dynamo=False`). On the models we target it is ~20x
faster than the torch.export-based one (0.2 s vs 4 s on a small CNN), its op patterns are the ones
onnx2tf and our Core ML converter are tested against, and dynamic axes are one argument.
`.pt2` archives hold an ExportedProgram, which only the torch.export-based exporter takes.
"""

from __future__ import annotations

import inspect
import io
import pickle
import re
import warnings as _warnings

import numpy as np

from bridge.base.arrays import Feed
from bridge.base.errors import ConversionError, UsageError, one_line, require_trust
from bridge.base.lane import ExportRequest, ExportResult
from bridge.base.lazy import require
from bridge.base.sources import Format
from bridge.base.tensors import TensorSpec, Values, apply_overrides
from bridge.converters.onnx.export import OPSET, example_tuple, finish, int_range

# Formats that run code when loaded, whatever their content (torch 2.13): torch.export.load
# unpickles a .pt2's sample inputs, pickled weights and opaque constants with full pickle, and
# rebuilds symbolic shapes with `sympy.sympify`, which evaluates the archive's text as Python.
RUNS_CODE = {
    Format.TORCH_EXPORT: "loading a torch.export archive unpickles parts of it and evaluates its shape "
                         "expressions as Python",
    Format.TORCHSCRIPT: "a TorchScript file runs the code it carries",
}


def export_file(req: ExportRequest) -> ExportResult:
    """Without `--trust-code` only weights-only pickles load, and those hold no architecture."""
    return export_model(*load_file(req), req)


def load_file(req: ExportRequest) -> tuple[object, object | None]:
    """The model in a torch file and its example inputs (a `.pt2` carries them), under the loading
    policy: code-running formats need `--trust-code`, pickles load weights-only unless trusted."""
    path = str(req.source.path)
    fmt = req.source.format
    if fmt in RUNS_CODE:
        require_trust(req.trust_code, req.source.text, RUNS_CODE[fmt])
    torch = require("torch")
    if fmt is Format.TORCH_EXPORT:
        program = _damaged_is_usage(req, lambda: torch.export.load(path))
        return program, program.example_inputs[0] if program.example_inputs else None
    if fmt is Format.TORCHSCRIPT:
        return _damaged_is_usage(req, lambda: torch.jit.load(path, map_location="cpu")), None
    obj = _load_pickle(torch, req)
    if isinstance(obj, torch.nn.Module):
        return obj, None
    held = "weights but no architecture (a state dict)" if isinstance(obj, dict) else \
        f"a {type(obj).__name__}, not a model"
    raise UsageError(f"{req.source.text}: holds {held}; give a Python entrypoint that builds the model "
                     "and loads them: file.py:make_model")


def _load_pickle(torch, req: ExportRequest):
    """`torch.load` with the weights-only unpickler; the full one only under `--trust-code`."""
    path = str(req.source.path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # the weights-only unpickler met something other than tensors
        found = re.search(r"GLOBAL (\S+) was not an allowed global", str(e))
        what = f"the pickle calls {found.group(1)}" if found else "the pickle holds more than tensors"
        require_trust(req.trust_code, req.source.text, f"{what}; unpickling it can run any code")
    except (RuntimeError, EOFError, ValueError) as e:  # torch's zip reader and unpickler on a broken file
        raise UsageError(f"{req.source.text}: a damaged or truncated torch file ({_brief(e)})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, AttributeError, ImportError, RuntimeError, EOFError) as e:
        # a pickled module needs its class importable under the name it was saved with
        raise UsageError(f"{req.source.text}: torch cannot unpickle it ({_brief(e)}); a Python "
                         "entrypoint that builds the model avoids pickled classes") from None


def _damaged_is_usage(req: ExportRequest, load):
    """A file torch's loaders cannot read is unusable input (exit 2), not a failed conversion."""
    try:
        return load()
    except (RuntimeError, ValueError, KeyError, AssertionError, OSError) as e:  # what torch's readers raise
        raise UsageError(f"{req.source.text}: torch cannot load this {req.source.format} file "
                         f"({_brief(e)})") from None



def export_model(model, example, req: ExportRequest) -> ExportResult:
    torch = require("torch")
    is_program = isinstance(model, torch.export.ExportedProgram)
    module = model.module() if is_program else model
    if not is_program:
        module.eval()
    names = _input_names(model if not is_program else module, example)
    specs = _specs(names, example)
    specs = apply_overrides(specs, req.overrides, req.dynamic)
    args = tuple(torch.from_numpy(np.zeros(s.shape, dtype=s.dtype)) for s in specs)
    with torch.no_grad():
        sample_out = module(*args)
    output_names = _output_names(sample_out)
    buf = io.BytesIO()
    route = ("torch", "torch.onnx" + ("(dynamo)" if is_program else "(torchscript)"))
    dynamic_axes = {s.name: {a: f"{s.name}_{a}" for a in s.dynamic} for s in specs if s.dynamic}
    try:
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore")
            if is_program:
                program = torch.onnx.export(model, args, input_names=[s.name for s in specs],
                                            output_names=output_names, opset_version=OPSET,
                                            dynamo=True, verbose=False)
                onnx_model = program.model_proto
            else:
                torch.onnx.export(module, args, buf, input_names=[s.name for s in specs],
                                  output_names=output_names, opset_version=OPSET,
                                  dynamic_axes=dynamic_axes or None, dynamo=False,
                                  do_constant_folding=True)
                onnx_model = require("onnx").load_from_string(buf.getvalue())
    except Exception as e:  # torch.onnx raises many types; the message names the op
        raise ConversionError(f"torch.onnx.export failed: {one_line(e, pick='first')}", stage="export") from None

    def run(feed: Feed) -> Feed:
        with torch.no_grad():
            out = module(*(torch.from_numpy(feed[s.name]) for s in specs))
        return dict(zip(output_names, _flatten(out), strict=True))

    return finish(onnx_model, req, framework="torch", inputs=specs, run_source=run, route=route)


def _input_names(model, example) -> list[str]:
    if isinstance(example, dict):
        return list(example)
    try:
        schema = model.forward.schema  # TorchScript
        params = [a.name for a in schema.arguments[1:]]
    except AttributeError:
        sig = inspect.signature(model.forward)
        params = [p.name for p in sig.parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    count = len(example_tuple(example)) if example is not None else len(params)
    return params[:count] if len(params) >= count else [f"input_{i}" for i in range(count)]


def _specs(names: list[str], example) -> list[TensorSpec]:
    if example is None:
        return []  # --input must give them
    specs = []
    for name, t in zip(names, example_tuple(example), strict=True):
        arr = t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)
        specs.append(TensorSpec(name, tuple(arr.shape), str(arr.dtype), int_range=int_range(arr),
                                values=Values.of([arr])))
    return specs


def _flatten(out) -> list[np.ndarray]:
    if isinstance(out, dict):
        return [a for v in out.values() for a in _flatten(v)]
    if isinstance(out, (tuple, list)):
        return [a for v in out for a in _flatten(v)]
    return [out.detach().cpu().numpy()]


def _output_names(out) -> list[str]:
    if isinstance(out, dict) and all(not isinstance(v, (dict, list, tuple)) for v in out.values()):
        return list(out)
    flat = _flatten(out)
    return ["output"] if len(flat) == 1 else [f"output_{i}" for i in range(len(flat))]


def _brief(e: BaseException) -> str:
    return one_line(e, pick="first", with_type=True, limit=200)
