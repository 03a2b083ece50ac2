"""Checks every run option's value before anything runs, for the CLI and the Python API alike.

A value that cannot work (a timeout of NaN, a negative seed, a std of 0) is bad usage: exit 2 in
milliseconds, never exit 1 or 3 after minutes of export. The CLI parses text into these values
(`bridge.commands.parsing`); the checks live with the options so library callers get them too.
"""

from __future__ import annotations

import math

from bridge.base.errors import UsageError

DEFAULT_TIMEOUT = 1800.0  # seconds per stage
MIN_MEMORY = 256 << 20  # below this no stage can even import numpy
MAX_SAMPLES = 1024
MAX_SEED = 2**32 - 1
MAX_SIDE = 16384  # --resize


def check_limits(*, timeout: float | None, max_memory: int | None, samples: int, seed: int) -> None:
    if timeout is not None and not (_finite(timeout) and timeout > 0):
        raise UsageError(f"--timeout {timeout!r}: expected a positive number of seconds per stage "
                         f"(default {DEFAULT_TIMEOUT:g})")
    if max_memory is not None and not (isinstance(max_memory, int) and max_memory >= MIN_MEMORY):
        raise UsageError(f"--max-memory {max_memory!r} bytes: expected at least {MIN_MEMORY >> 20} MiB "
                         "(a size such as 4G or 512M)")
    if not (isinstance(samples, int) and 1 <= samples <= MAX_SAMPLES):
        raise UsageError(f"--samples {samples!r}: expected 1 to {MAX_SAMPLES}")
    if not (isinstance(seed, int) and 0 <= seed <= MAX_SEED):
        raise UsageError(f"--seed {seed!r}: expected an integer from 0 to {MAX_SEED}")


def check_normalization(mean: tuple[float, ...], std: tuple[float, ...], resize: tuple[int, int] | None) -> None:
    """`--mean`, `--std`, `--resize`: finite, nonzero divisors, positive sizes. Their length against
    the model's channels is checked once the inputs are known (`bridge.base.samples`)."""
    for flag, values in (("--mean", mean), ("--std", std)):
        if not all(_finite(v) for v in values):
            raise UsageError(f"{flag} {','.join(map(str, values))}: every value must be a finite number")
    if any(v == 0 for v in std):
        raise UsageError(f"--std {','.join(map(str, std))}: a standard deviation of 0 divides by zero")
    if resize is not None and not all(isinstance(v, int) and 1 <= v <= MAX_SIDE for v in resize):
        raise UsageError(f"--resize {resize[0]}x{resize[1]}: expected HEIGHTxWIDTH from 1 to {MAX_SIDE}")


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
