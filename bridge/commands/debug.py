"""`bridge debug SOURCE ARTIFACT`"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from bridge.commands.common import RichProgress, command_line, print_layers, print_outcome
from bridge.commands.parsing import floats, memory, size
from bridge.options import DEFAULT_TIMEOUT


def command(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="The source model the artifact must match.")],
    artifact: Annotated[str, typer.Argument(help="One .onnx, .tflite or .mlpackage, made by any tool.")],
    report: Annotated[Path, typer.Option(help="Write report.json here.")] = None,
    html: Annotated[Path, typer.Option(help="Write the report as a self-contained HTML page here.")] = None,
    layers: Annotated[int, typer.Option(min=0, help="Layers printed (the report lists them all).")] = 40,
    input: Annotated[list[str], typer.Option("--input", help=escape("NAME:D0,D1,...[:DTYPE] (repeatable)."))] = None,
    dynamic: Annotated[list[str], typer.Option(help="NAME:AXIS kept dynamic (repeatable).")] = None,
    threshold: Annotated[list[str], typer.Option(help=escape("[MODE@][OUTPUT:]METRIC=VALUE."))] = None,
    parity_data: Annotated[Path, typer.Option(help="Parity inputs: a folder of .npy/.npz/images, or one .npz "
                                                   "(at most --samples of them).")] = None,
    mean: Annotated[str, typer.Option(help="Per-channel mean of 0-1 images, e.g. 0.485,0.456,0.406.")] = None,
    std: Annotated[str, typer.Option(help="Per-channel std dividing 0-1 images.")] = None,
    resize: Annotated[str, typer.Option(help="Resize parity images to HxW (default: the input's).")] = None,
    samples: Annotated[int, typer.Option(min=1, help="Parity samples (localisation uses the first 4).")] = 8,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic samples.")] = 0,
    trust_code: Annotated[bool, typer.Option(help="Load files that can run embedded code.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds each stage may run.")] = DEFAULT_TIMEOUT,
    max_memory: Annotated[str, typer.Option(help="Address-space limit of each stage, e.g. 8G.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Compare ARTIFACT with SOURCE layer by layer: the first layer where it leaves the hub, and each layer's
    error on exact inputs. Exit code as validate's."""
    from bridge.base.samples import CalibrationOptions
    from bridge.validation import ValidateOptions, debug

    options = ValidateOptions(inputs=tuple(input or ()), dynamic=tuple(dynamic or ()),
                              thresholds=tuple(threshold or ()), report=str(report) if report else None,
                              html=str(html) if html else None,
                              samples=samples, seed=seed, trust_code=trust_code, timeout=timeout,
                              max_memory=memory(max_memory), verbose=verbose,
                              data=CalibrationOptions(None, floats(mean, "--mean"), floats(std, "--std"), size(resize),
                                                      parity_path=str(parity_data) if parity_data else None))
    result = debug(source, artifact, options, RichProgress(), command_line=command_line(ctx))
    print_layers(result, layers)
    print_outcome(result)
    raise typer.Exit(result.exit_code)
