"""Option text -> values, for the commands. Every malformed text is a one-line `UsageError`; the
values are range-checked where the options are used (`bridge.options`), for API callers too."""

from __future__ import annotations

import math
import re

from bridge.base.errors import UsageError

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


def memory(text: str | None) -> int | None:
    """`8G`, `512M`, `512MiB`, `2048` (bytes)."""
    if not text:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not m:
        raise UsageError(f"--max-memory {text!r}: expected a size such as 4G or 512M")
    return int(float(m.group(1)) * _UNITS[m.group(2)])
