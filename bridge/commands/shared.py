"""Options several commands declare with the same meaning and help (convert, validate, debug): one
`Annotated` alias each, so their spelling and help cannot drift apart."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from bridge.options import DEFAULT_TIMEOUT

__all__ = ["DEFAULT_TIMEOUT", "Dynamic", "Html", "Inputs", "MaxMemory", "Mean", "ParityData", "Seed", "Std",
           "Thresholds", "Timeout", "Verbose", "validate_options"]

Inputs = Annotated[list[str], typer.Option("--input", help=escape("NAME:D0,D1,...[:DTYPE] (repeatable)."))]
Dynamic = Annotated[list[str], typer.Option(help="NAME:AXIS kept dynamic (repeatable).")]
ParityData = Annotated[Path, typer.Option(help="Parity inputs: a folder of .npy/.npz/images, or one .npz "
                                               "(at most --samples of them).")]
Mean = Annotated[str, typer.Option(help="Per-channel mean of 0-1 images, e.g. 0.485,0.456,0.406.")]
Std = Annotated[str, typer.Option(help="Per-channel std dividing 0-1 images.")]
Seed = Annotated[int, typer.Option(help="Seed of the synthetic samples.")]
Timeout = Annotated[float, typer.Option(help="Seconds each stage may run.")]
MaxMemory = Annotated[str, typer.Option(help="Address-space limit of each stage, e.g. 8G.")]
Html = Annotated[Path, typer.Option(help="Write the report as a self-contained HTML page here.")]
Thresholds = Annotated[list[str], typer.Option(help=escape("[MODE@][OUTPUT:]METRIC=VALUE."))]
Verbose = Annotated[bool, typer.Option("--verbose", "-v")]


def validate_options(*, input, dynamic, threshold, report, html, mean, std, resize, parity_data, samples, seed,
                     trust_code, timeout, max_memory, verbose, **more):
    """The `ValidateOptions` validate and debug both build from the options above (`more`: what only
    one of them has, e.g. junit, localize)."""
    from bridge.base.samples import CalibrationOptions
    from bridge.commands.parsing import floats, memory, size
    from bridge.validation import ValidateOptions

    return ValidateOptions(inputs=tuple(input or ()), dynamic=tuple(dynamic or ()),
                           thresholds=tuple(threshold or ()), report=str(report) if report else None,
                           html=str(html) if html else None, samples=samples, seed=seed, trust_code=trust_code,
                           timeout=timeout, max_memory=memory(max_memory), verbose=verbose,
                           data=CalibrationOptions(None, floats(mean, "--mean"), floats(std, "--std"), size(resize),
                                                   parity_path=str(parity_data) if parity_data else None), **more)
