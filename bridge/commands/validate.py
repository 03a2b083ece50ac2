"""`bridge validate SOURCE ARTIFACT...`"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from bridge.commands.common import RichProgress, command_line, print_outcome
from bridge.commands.parsing import floats, memory, size
from bridge.options import DEFAULT_TIMEOUT


def command(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="The source model the artifacts must match.")],
    artifacts: Annotated[list[str], typer.Argument(help="ONNX or TFLite files, made by any tool.")],
    report: Annotated[Path, typer.Option(help="Write report.json here.")] = None,
    html: Annotated[Path, typer.Option(help="Write the report as a self-contained HTML page here.")] = None,
    junit: Annotated[Path, typer.Option(help="Write the verdicts as JUnit XML here, one test case per "
                                             "artifact, for CI.")] = None,
    input: Annotated[list[str], typer.Option("--input", help=escape("NAME:D0,D1,...[:DTYPE] (repeatable)."))] = None,
    dynamic: Annotated[list[str], typer.Option(help="NAME:AXIS kept dynamic (repeatable).")] = None,
    threshold: Annotated[list[str], typer.Option(help=escape("[MODE@][OUTPUT:]METRIC=VALUE."))] = None,
    parity_data: Annotated[Path, typer.Option(help="Parity inputs: a folder of .npy/.npz/images, or one .npz "
                                                   "(at most --samples of them).")] = None,
    mean: Annotated[str, typer.Option(help="Per-channel mean of 0-1 images, e.g. 0.485,0.456,0.406.")] = None,
    std: Annotated[str, typer.Option(help="Per-channel std dividing 0-1 images.")] = None,
    resize: Annotated[str, typer.Option(help="Resize parity images to HxW (default: the input's).")] = None,
    samples: Annotated[int, typer.Option(min=1, help="Parity samples.")] = 8,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic samples.")] = 0,
    trust_code: Annotated[bool, typer.Option(help="Load files that can run embedded code.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds each stage may run.")] = DEFAULT_TIMEOUT,
    max_memory: Annotated[str, typer.Option(help="Address-space limit of each stage, e.g. 8G.")] = None,
    localize: Annotated[bool, typer.Option(help="Localise the first divergent layer of every artifact that fails "
                                                "parity (report.json: parity.localization).")] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Check artifacts produced anywhere against SOURCE; each artifact's mode is read from its tensors."""
    from bridge.base.samples import CalibrationOptions
    from bridge.localization import When
    from bridge.validation import ValidateOptions, validate

    options = ValidateOptions(inputs=tuple(input or ()), dynamic=tuple(dynamic or ()),
                              thresholds=tuple(threshold or ()), report=str(report) if report else None,
                              html=str(html) if html else None, junit=str(junit) if junit else None,
                              samples=samples, seed=seed, trust_code=trust_code, timeout=timeout,
                              max_memory=memory(max_memory), verbose=verbose,
                              localize=When.on_failure if localize else When.never,
                              data=CalibrationOptions(None, floats(mean, "--mean"), floats(std, "--std"), size(resize),
                                                      parity_path=str(parity_data) if parity_data else None))
    result = validate(source, artifacts, options, RichProgress(), command_line=command_line(ctx))
    print_outcome(result)
    raise typer.Exit(result.exit_code)
