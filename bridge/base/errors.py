"""Typed errors. Only the CLI maps them to exit codes (`exit_code`); library callers catch them.

`ErrorRecord` is what a report keeps of an error; `one_line` is the one way any exception becomes
a printed or reported message.
"""

from __future__ import annotations

from dataclasses import dataclass


class BridgeError(Exception):
    """Base of every error the gateway raises on purpose."""

    exit_code = 3


class UsageError(BridgeError):
    """Bad usage or an unusable input, found before any conversion ran."""

    exit_code = 2


class MissingBackend(UsageError):
    """A framework the requested work needs is not installed."""

    def __init__(self, module: str, extra: str):
        super().__init__(f'{module} is not installed; run: pip install "bridge-convert[{extra}]"')
        self.module = module
        self.extra = extra

    def __reduce__(self):  # raised in stage children: must survive the trip back to the parent
        return (type(self), (self.module, self.extra))


class UnsafeInput(UsageError):
    """A file that would make bridge read outside it, or exhaust the machine: refused whole."""


class NeedsTrust(UsageError):
    """A file that can run code when it is loaded, given without `--trust-code`."""


def require_trust(trusted: bool, source: str, why: str) -> None:
    """One message shape for every format: the file, the reason, the flag."""
    if not trusted:
        raise NeedsTrust(f"{source}: refused without --trust-code ({why})")


class ConversionError(BridgeError):
    """A stage could not produce its artifact. Carries where it broke, for the report."""

    exit_code = 3

    def __init__(self, message: str, *, stage: str = "", node: str | None = None,
                 op_type: str | None = None):
        super().__init__(message)
        self.stage = stage
        self.node = node
        self.op_type = op_type

    def __reduce__(self):  # keep keyword fields across process boundaries
        return (_rebuild, (type(self), str(self), self.stage, self.node, self.op_type))


def _rebuild(cls, message, stage, node, op_type):
    return cls(message, stage=stage, node=node, op_type=op_type)


class RuntimeUnavailable(BridgeError):
    """No runtime on this machine can execute the artifact: parity is `not_executed` (exit 1)."""

    exit_code = 1


class StageCrashed(ConversionError):
    """A child process died (signal, out of memory) or ran past its time limit."""


def one_line(error: BaseException | str, *, pick: str = "all", prefer: str = "", with_type: bool = False,
             limit: int = 500) -> str:
    """The one way an exception (or a library's text) becomes a printed or reported message: its
    non-blank lines, stripped, then `pick`ed: all of them joined (libraries spread one sentence
    over several), the first (torch's state-dict errors put the substance there), or the last
    (AutoGraph and onnx2tf put the error after the traced stack); a line containing `prefer`
    (TensorFlow's converter marks its own with "error:") wins over `pick`."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    chosen = [ln for ln in lines if prefer and prefer in ln.lower()][:1]
    if not chosen:
        chosen = lines if pick == "all" else lines[:1] if pick == "first" else lines[-1:]
    text = " ".join(chosen)[:limit]
    if isinstance(error, BaseException) and (with_type or not text):
        return f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text


@dataclass(frozen=True)
class ErrorRecord:
    """Where a stage broke, for the report: built from an exception in one place."""

    stage: str
    message: str
    node: str | None = None
    op_type: str | None = None

    @staticmethod
    def of(e: BaseException, stage: str) -> ErrorRecord:
        if isinstance(e, ConversionError):
            return ErrorRecord(e.stage or stage, one_line(str(e)), e.node, e.op_type)
        if isinstance(e, BridgeError):
            return ErrorRecord(stage, one_line(str(e)))
        return ErrorRecord(stage, f"{type(e).__name__}: {one_line(str(e)) or type(e).__name__}")

    def to_json(self) -> dict:
        return {"stage": self.stage, "node": self.node, "op_type": self.op_type, "message": self.message}
