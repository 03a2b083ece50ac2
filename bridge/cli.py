"""The `bridge` console script. Thin: each command parses, calls `bridge`, prints.

Errors become exit codes here and only here: 2 bad usage or unusable input, 3 a conversion failed,
1 a parity check failed or could not run, 0 every artifact passed. Every error is one line on
stderr: a typo must never read as a failed model (exit 1) in CI, nor print a traceback.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Annotated

import typer

from bridge.base.errors import BridgeError, one_line

# each runs `bridge.commands.<name>.command` (convert's is a factory: its options come from the lanes)
COMMANDS = ("convert", "validate", "debug", "inspect", "batch", "doctor")
_NO_ARGS_HELP = {"convert", "validate", "debug", "inspect", "batch"}


def make_app(args: list[str] | None = None) -> typer.Typer:
    """The CLI. With a command line that starts with a command's name, that command only: each
    command's module imports what it runs with (the others cost ~20 ms of every run, a fifth of a
    warm `bridge batch`'s own time); anything else (`bridge`, `bridge --help`, a misspelt command,
    `app` for tests) gets every command, so help lists them all and a typo is offered the close ones."""
    import importlib

    app = typer.Typer(
        name="bridge",
        help="Convert PyTorch, Keras and ONNX models to ONNX, TFLite and Core ML, with a parity verdict for every "
             "artifact.",
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode="rich",  # for the lanes' option panels; help texts escape their brackets
    )
    names = [args[0]] if args and args[0] in COMMANDS else list(COMMANDS)
    for name in names:
        command = importlib.import_module(f"bridge.commands.{name}").command
        app.command(name=name, no_args_is_help=name in _NO_ARGS_HELP)(command() if name == "convert" else command)
    app.callback(invoke_without_command=True)(_root)
    return app


def __getattr__(name: str):
    if name == "app":  # `from bridge.cli import app` (CliRunner): every command
        return make_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _version(value: bool) -> None:
    if value:
        from bridge import __version__

        typer.echo(f"bridge {__version__}")
        raise typer.Exit(0)


def _root(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Convert PyTorch, Keras and ONNX models to ONNX, TFLite and Core ML, with a parity verdict for every
    artifact."""
    if ctx.invoked_subcommand is None:  # `bridge` alone asks for the help
        typer.echo(ctx.get_help())
        raise typer.Exit(0)


def _usage_message(e: Exception, argv: list[str]) -> str:
    """Click's usage errors, and pydantic's validation errors that typer 0.29 lets escape."""
    text = e.format_message() if isinstance(e, typer.TyperException) else str(e)
    if type(e).__name__ == "NoSuchOption":
        text = _no_such_option(e.option_name, getattr(e, "possibilities", None) or ())
    text = one_line(text) or "bad usage"
    option = getattr(e, "option_name", None)
    dashed = [a for a in argv if option and a.startswith(option) and a != option and os.path.exists(a)]
    if dashed:  # `bridge convert -model.onnx`: a file name that reads as an option
        text += f"; {dashed[0]!r} is a file: put it after '--', as in `bridge convert -- {dashed[0]}`"
    ctx = getattr(e, "ctx", None)
    return f"{text} (see {ctx.command_path if ctx is not None else 'bridge'} --help)"


def _no_such_option(name: str, possibilities) -> str:
    """Click offers every option within difflib's default cutoff of the whole flag, dashes
    included, so `--bogus` drew "--out, --verbose"; only names close without their dashes are
    offered here (`--quantise` -> `--quantize`, `--job` -> `--jobs`)."""
    import difflib

    bare = name.lstrip("-")
    close = [p for p in possibilities if difflib.SequenceMatcher(None, bare, p.lstrip("-")).ratio() >= 0.7]
    return f"No such option: {name}" + (f" (did you mean {' or '.join(sorted(close))}?)" if close else "")


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _is_pydantic_error(e: Exception) -> bool:
    return any(c.__module__.startswith("pydantic") for c in type(e).__mro__)


def main(argv: list[str] | None = None) -> None:
    # Stage children exit without multiprocessing's cleanup (framework teardown is slow or crashes);
    # the shared resource tracker would then print a harmless "leaked semaphore" warning.
    os.environ.setdefault("PYTHONWARNINGS", "ignore::UserWarning:multiprocessing.resource_tracker")
    args = list(argv if argv is not None else sys.argv[1:])
    verbose = any(a in ("-v", "--verbose") for a in args)
    try:
        # The command line goes into the report as typed (the context object hands it to commands).
        code = make_app(args)(args=args, prog_name="bridge", standalone_mode=False,  # typer.Exit's code, not sys.exit
                   obj={"command_line": ["bridge", *args]})
    except BridgeError as e:
        _fail(f"bridge: error: {one_line(str(e))}", e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        _fail("bridge: interrupted", 130)
    except typer.TyperException as e:  # click's usage errors: unknown option, bad value, no such command
        if type(e).__name__ == "NoArgsIsHelpError":  # `bridge convert` alone: the help, as a usage error
            # Making the error already rendered the help (rich's help prints as it is built and returns
            # ""); asking for it again printed it twice. Plain help comes back as the message instead.
            if e.format_message():
                typer.echo(e.format_message(), err=True)
            sys.exit(2)
        _fail(f"bridge: error: {_usage_message(e, args)}", 2)
    except Exception as e:  # noqa: BLE001 - last line of defence: no traceback unless asked for
        if isinstance(e, OSError) and e.errno in _NO_SPACE:  # the machine's state, not a bug to report
            where = f" writing {e.filename}" if e.filename else ""
            _fail(f"bridge: error: no space left on the device{where} ({e.strerror}): free some, or point --out, "
                  "--junit, --cache-dir or TMPDIR elsewhere", 3)
        if _is_pydantic_error(e):
            _fail(f"bridge: error: {_usage_message(e, [])}", 2)
        if verbose:
            raise
        _fail(f"bridge: internal error: {type(e).__name__}: {one_line(str(e))} (please report it; -v shows the "
              "traceback)", 3)
    if code == 130:  # typer turns Ctrl-C into Exit(130), silently
        _fail("bridge: interrupted", 130)
    sys.exit(code if isinstance(code, int) else 0)


def run() -> None:
    """The console script: `main`, then out without tearing the interpreter down. Finalizing what a
    run imported (numpy, onnx, jinja2, rich, pydantic) took ~80 ms of a warm `bridge batch` (~0.8 s)
    and does nothing a user sees. Everything an orderly exit does that matters still happens, in its
    order: non-daemon threads are joined (idle executor workers told to stop first), the exit hooks
    run (stage children ended, temporary folders removed, logs flushed), stdout and stderr flushed.
    A traceback (`-v`) or an interrupt outside `main`'s handling leaves the ordinary way."""
    import atexit
    import threading

    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code
    if not isinstance(code, int):  # sys.exit("text"), as the interpreter would report it
        if code is not None:
            sys.stderr.write(f"{code}\n")
        code = 0 if code is None else 1
    threading._shutdown()  # noqa: SLF001 - what finalization runs first: thread exit hooks, joins
    atexit._run_exitfuncs()  # noqa: SLF001
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            code = code or 1
    os._exit(code)


def _fail(message: str, code: int) -> None:
    sys.stdout.flush()
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
    sys.exit(code)


if __name__ == "__main__":
    main()
