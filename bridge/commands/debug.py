"""`bridge debug SOURCE ARTIFACT`"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bridge.commands.common import RichProgress, command_line, print_layers, print_outcome
from bridge.commands.shared import (
    DEFAULT_TIMEOUT,
    Dynamic,
    Html,
    Inputs,
    MaxMemory,
    Mean,
    ParityData,
    Seed,
    Std,
    Thresholds,
    Timeout,
    Verbose,
    validate_options,
)


def command(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="The source model the artifact must match.")],
    artifact: Annotated[str, typer.Argument(help="One .onnx, .tflite or .mlpackage, made by any tool.")],
    report: Annotated[Path, typer.Option(help="Write report.json here.")] = None,
    html: Html = None,
    layers: Annotated[int, typer.Option(min=0, help="Layers printed (the report lists them all).")] = 40,
    input: Inputs = None,
    dynamic: Dynamic = None,
    threshold: Thresholds = None,
    parity_data: ParityData = None,
    mean: Mean = None,
    std: Std = None,
    resize: Annotated[str, typer.Option(help="Resize parity images to HxW (default: the input's).")] = None,
    samples: Annotated[int, typer.Option(min=1, help="Parity samples (localisation uses the first 4).")] = 8,
    seed: Seed = 0,
    trust_code: Annotated[bool, typer.Option(help="Load files that can run embedded code.")] = False,
    timeout: Timeout = DEFAULT_TIMEOUT,
    max_memory: MaxMemory = None,
    verbose: Verbose = False,
) -> None:
    """Compare ARTIFACT with SOURCE layer by layer: the first layer where it leaves the hub, and each layer's
    error on exact inputs. Exit code as validate's."""
    from bridge.validation import debug

    options = validate_options(input=input, dynamic=dynamic, threshold=threshold, report=report, html=html,
                               mean=mean, std=std, resize=resize, parity_data=parity_data, samples=samples, seed=seed,
                               trust_code=trust_code, timeout=timeout, max_memory=max_memory, verbose=verbose)
    result = debug(source, artifact, options, RichProgress(), command_line=command_line(ctx))
    print_layers(result, layers)
    print_outcome(result)
    raise typer.Exit(result.exit_code)
