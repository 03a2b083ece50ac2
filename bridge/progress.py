"""Progress reporting for long steps. The CLI shows a spinner; library callers get silence."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class Progress:
    """Silent by default; `bridge.cli` passes one that draws with rich."""

    @contextlib.contextmanager
    def step(self, text: str) -> Iterator[None]:
        yield

    def note(self, text: str) -> None:
        pass
