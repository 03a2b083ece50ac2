"""Checks every run option's value before anything runs, for the CLI and the Python API alike.

A value that cannot work (a timeout of NaN, a negative seed, a std of 0) is bad usage: exit 2 in
milliseconds, never exit 1 or 3 after minutes of export. Option text becomes these values here too
(`floats`, `size`, `memory`): the CLI and `bridge batch`'s matrix file read the same spellings;
the checks live with the options so library callers get them too.
"""

from __future__ import annotations

import math
import re

from bridge.base.errors import UsageError

DEFAULT_TIMEOUT = 1800.0  # seconds per stage
# A mixed mode's search takes at most this many times the plain mode's conversion and parity time.
SEARCH_BUDGET = 4.0
MAX_SEARCH_BUDGET = 1000.0
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


def check_search_budget(budget: float) -> None:
    if not (_finite(budget) and 0 < budget <= MAX_SEARCH_BUDGET):
        raise UsageError(f"--search-budget {budget!r}: expected a multiple of the plain mode's time above 0 and at "
                         f"most {MAX_SEARCH_BUDGET:g} (default {SEARCH_BUDGET:g})")


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


# --- option text -> values ----------------------------------------------------------------------

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def floats(text: str | None, flag: str) -> tuple[float, ...]:
    if not text:
        return ()
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"{flag} {text!r}: expected comma-separated numbers, e.g. 0.485,0.456,0.406") from None
    if not all(math.isfinite(v) for v in values):
        raise UsageError(f"{flag} {text!r}: every value must be a finite number")
    return values


def size(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m:
        raise UsageError(f"--resize {text!r}: expected HEIGHTxWIDTH, e.g. 224x224")
    return int(m.group(1)), int(m.group(2))


def memory(text: str | None, flag: str = "--max-memory") -> int | None:
    """`8G`, `512M`, `512MiB`, `2048` (bytes)."""
    if not text:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not m:
        raise UsageError(f"{flag} {text!r}: expected a size such as 4G or 512M")
    return int(float(m.group(1)) * _UNITS[m.group(2)])
