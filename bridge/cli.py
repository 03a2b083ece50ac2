"""The `bridge` console script. Thin: each command parses, calls `bridge`, prints.

Errors become exit codes here and only here: 2 bad usage or unusable input, 3 a conversion failed,
1 a parity check failed or could not run, 0 every artifact passed.
"""

from __future__ import annotations

import os
import sys

import typer

from bridge.commands import convert, doctor, inspect, validate
from bridge.errors import BridgeError

app = typer.Typer(
    name="bridge",
    help="Convert PyTorch, Keras and ONNX models to ONNX and TFLite, with a parity verdict for every artifact.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command(name="convert", no_args_is_help=True)(convert.command)
app.command(name="validate", no_args_is_help=True)(validate.command)
app.command(name="inspect", no_args_is_help=True)(inspect.command)
app.command(name="doctor")(doctor.command)


def main() -> None:
    # Stage children exit without multiprocessing's cleanup (framework teardown is slow or crashes);
    # the shared resource tracker would then print a harmless "leaked semaphore" warning.
    os.environ.setdefault("PYTHONWARNINGS", "ignore::UserWarning:multiprocessing.resource_tracker")
    try:
        code = app(standalone_mode=False)  # returns typer.Exit's code instead of exiting
    except BridgeError as e:
        typer.secho(f"bridge: error: {e}", err=True, fg=typer.colors.RED)
        sys.exit(e.exit_code)
    except typer.Abort:
        typer.secho("bridge: aborted", err=True)
        sys.exit(130)
    except Exception as e:  # click's usage errors
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(2)
        raise
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
