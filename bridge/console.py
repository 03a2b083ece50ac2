"""The `bridge` console script's first lines, before the CLI (typer, pydantic, rich, bridge's
orchestration: ~0.3 s) loads: for `bridge convert SOURCE`, the child the export will run in starts
now and imports the export's frameworks (torch's import alone is ~1 s) while the gateway starts.

Nothing here parses the command line for real; it guesses SOURCE as the first argument that names
a model (`bridge.base.sources.export_modules`). The orchestration asks for the same preload from
the parsed SOURCE; a wrong guess leaves a child no stage takes, ended at the first stage.
"""

from __future__ import annotations

import sys


def run() -> None:
    args = sys.argv[1:]
    if args[:1] == ["convert"] and not {"-h", "--help"} & set(args):
        _prestart(args[1:])
    from bridge.cli import run as cli

    cli()


def _prestart(args: list[str]) -> None:
    from bridge.base.sources import export_modules
    from bridge.executors import prestart

    if any(a.startswith("--max-memory") for a in args):  # its limit must hold the imports too
        preload = ()
    else:
        preload = next((found for a in args if not a.startswith("-") and (found := export_modules(a))), ())
    prestart(verbose=bool({"-v", "--verbose"} & set(args)), preload=preload)
