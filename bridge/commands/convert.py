"""`bridge convert SOURCE --target ... [--quantize ...]`

The core options are written out here; each installed lane adds its own option group, built from
the fields of its options dataclass (`Lane.options`), so a plug-in lane's flags appear in
`bridge convert --help` without this file changing.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from bridge.base.samples import CalibrationOptions
from bridge.commands.common import RichProgress, command_line, open_cache, print_outcome
from bridge.commands.parsing import floats, memory, size
from bridge.commands.shared import DEFAULT_TIMEOUT, Dynamic, Inputs, MaxMemory, Mean, Seed, Std, Timeout
from bridge.options import SEARCH_BUDGET


def core(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="Model: file.py:callable, package.module:callable, .onnx, "
                                               ".pt2, TorchScript, .keras, .h5 or a SavedModel folder.")],
    target: Annotated[list[str], typer.Option("--target", "-t", help="onnx, tflite, coreml, or an installed "
                                                                     "plug-in lane (repeatable).")] = None,
    quantize: Annotated[list[str], typer.Option(help="TARGET=MODE[,MODE...] (repeatable), e.g. "
                                                     "tflite=fp32,fp16,int8.")] = None,
    input: Inputs = None,
    dynamic: Dynamic = None,
    calibration: Annotated[Path, typer.Option(help="Folder of .npy/.npz/images, or one .npz.")] = None,
    parity_data: Annotated[Path, typer.Option(help="Parity inputs: a folder of .npy/.npz/images, or one .npz "
                                                   "(at most --samples of them; never used to calibrate).")] = None,
    mean: Mean = None,
    std: Std = None,
    resize: Annotated[str, typer.Option(help="Resize calibration and parity images to HxW (default: the "
                                             "input's).")] = None,
    threshold: Annotated[list[str], typer.Option(help=escape("[MODE@][OUTPUT:]METRIC=VALUE overriding a parity "
                                                             "threshold (rel_l2, snr_db, cosine)."))] = None,
    out: Annotated[Path, typer.Option(help="Output folder (default ./bridge-out/<model name>); it gets the "
                                           "artifacts, report.json and report.html.")] = None,
    junit: Annotated[Path, typer.Option(help="Also write the verdicts as JUnit XML here, one test case per "
                                             "artifact, for CI.")] = None,
    samples: Annotated[int, typer.Option(min=1, help="Parity samples.")] = 8,
    seed: Seed = 0,
    trust_code: Annotated[bool, typer.Option(help="Load model files that can run embedded code "
                                                  "(TorchScript, pickles, .h5, SavedModel).")] = False,
    timeout: Timeout = DEFAULT_TIMEOUT,
    max_memory: MaxMemory = None,
    localize: Annotated[bool, typer.Option(help="Localise the first divergent layer of every artifact that fails "
                                                "parity (report.json: parity.localization).")] = True,
    search_budget: Annotated[float, typer.Option(help="A mixed mode's search (int8-mixed, fp16-mixed) takes at most "
                                                      "this many times the plain mode's conversion and parity "
                                                      "time.")] = SEARCH_BUDGET,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show the converters' own output.")] = False,
    cache_dir: Annotated[Path, typer.Option(help="Stage cache folder (default ~/.cache/bridge/stages): stages "
                                                 "whose inputs are unchanged are reused.")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Run every stage; read and write no cache.")] = False,
    cache_size: Annotated[str, typer.Option(help="Bound of the stage cache, e.g. 20G (least recently used "
                                                 "entries go first).")] = None,
    **lane_values,
) -> None:
    """Convert SOURCE to every target and mode, check each artifact against the source, write report.json
    and report.html."""
    from bridge.base.sources import export_modules
    from bridge.executors import prestart

    # the export's child boots, and loads its frameworks, while the orchestration loads and plans
    # (run from the console script, `bridge.console` has started it already)
    prestart(verbose, export_modules(source), memory(max_memory))
    from bridge.conversion import ConvertOptions, convert

    options = ConvertOptions(
        targets=tuple(target or ("onnx", "tflite")),
        quantize=tuple(quantize or ()),
        inputs=tuple(input or ()),
        dynamic=tuple(dynamic or ()),
        thresholds=tuple(threshold or ()),
        calibration=CalibrationOptions(str(calibration) if calibration else None, floats(mean, "--mean"),
                                       floats(std, "--std"), size(resize),
                                       parity_path=str(parity_data) if parity_data else None),
        out=str(out) if out else None,
        samples=samples,
        seed=seed,
        lanes=_by_lane(lane_values),
        trust_code=trust_code,
        timeout=timeout,
        max_memory=memory(max_memory),
        verbose=verbose,
        junit=str(junit) if junit else None,
        localize=localize,
        search_budget=search_budget,
    )
    report = convert(source, options, RichProgress(), command_line=command_line(ctx),
                     cache=open_cache(cache_dir, no_cache, cache_size))
    print_outcome(report)
    raise typer.Exit(report.exit_code)


_SEP = "__"  # parameter name: <lane>__<field>


def _by_lane(values: dict) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for key, value in values.items():
        lane, field = key.split(_SEP, 1)
        out.setdefault(lane, {})[field] = value
    return out


def _lane_parameters() -> list[inspect.Parameter]:
    """One keyword parameter per field of every installed lane's options, in a help panel per lane."""
    from bridge.lanes import lanes
    from bridge.plan import flag

    params = []
    for lane in lanes().values():
        if lane.options is None:
            continue
        hints = typing.get_type_hints(lane.options)
        for f in dataclasses.fields(lane.options):
            kind = _cli_type(hints[f.name])
            option = typer.Option(flag(lane, f), help=escape(f.metadata.get("help", "")),
                                  rich_help_panel=f"{lane.name} lane")
            params.append(inspect.Parameter(f"{lane.name}{_SEP}{f.name}", inspect.Parameter.KEYWORD_ONLY,
                                            default=f.default, annotation=Annotated[kind, option]))
    return params


def _cli_type(hint):
    """`str | None` -> str: typer takes None defaults as optional."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return hint if hint in (bool, int, float, str) or (isinstance(hint, type) and issubclass(hint, Enum)) else str


def command():
    """The convert command with every installed lane's options (the signature typer reads)."""
    signature = inspect.signature(core, eval_str=True)
    base = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if p.default is not inspect.Parameter.empty else p
              for p in base]

    def run(**kwargs):
        return core(**kwargs)

    run.__signature__ = signature.replace(parameters=[*params, *_lane_parameters()])
    run.__annotations__ = {p.name: p.annotation for p in run.__signature__.parameters.values()}
    run.__doc__ = core.__doc__
    run.__name__ = "convert"
    return run
