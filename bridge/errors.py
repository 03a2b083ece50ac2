"""Typed errors. Only the CLI maps them to exit codes (`exit_code`); library callers catch them."""

from __future__ import annotations


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


def one_line(text: str, limit: int = 500) -> str:
    """A message on one line: some libraries put the substance on line two (torch's state-dict
    errors), others spread one sentence over several. Every printed or reported error goes through
    here."""
    joined = " ".join(line.strip() for line in str(text).splitlines() if line.strip())
    return joined[:limit]
