"""`bridge validate SOURCE ARTIFACT...`"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bridge.commands.common import RichProgress, command_line, print_outcome
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
    source: Annotated[str, typer.Argument(help="The source model the artifacts must match.")],
    artifacts: Annotated[list[str], typer.Argument(help="ONNX or TFLite files, made by any tool.")],
    report: Annotated[Path, typer.Option(help="Write report.json here.")] = None,
    html: Html = None,
    junit: Annotated[Path, typer.Option(help="Write the verdicts as JUnit XML here, one test case per "
                                             "artifact, for CI.")] = None,
    input: Inputs = None,
    dynamic: Dynamic = None,
    threshold: Thresholds = None,
    parity_data: ParityData = None,
    mean: Mean = None,
    std: Std = None,
    resize: Annotated[str, typer.Option(help="Resize parity images to HxW (default: the input's).")] = None,
    samples: Annotated[int, typer.Option(min=1, help="Parity samples.")] = 8,
    seed: Seed = 0,
    trust_code: Annotated[bool, typer.Option(help="Load files that can run embedded code.")] = False,
    timeout: Timeout = DEFAULT_TIMEOUT,
    max_memory: MaxMemory = None,
    localize: Annotated[bool, typer.Option(help="Localise the first divergent layer of every artifact that fails "
                                                "parity (report.json: parity.localization).")] = True,
    verbose: Verbose = False,
) -> None:
    """Check artifacts produced anywhere against SOURCE; each artifact's mode is read from its tensors."""
    from bridge.localization import When
    from bridge.validation import validate

    options = validate_options(input=input, dynamic=dynamic, threshold=threshold, report=report, html=html,
                               mean=mean, std=std, resize=resize, parity_data=parity_data, samples=samples, seed=seed,
                               trust_code=trust_code, timeout=timeout, max_memory=max_memory, verbose=verbose,
                               junit=str(junit) if junit else None,
                               localize=When.on_failure if localize else When.never)
    result = validate(source, artifacts, options, RichProgress(), command_line=command_line(ctx))
    print_outcome(result)
    raise typer.Exit(result.exit_code)
