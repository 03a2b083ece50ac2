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

    def reused(self, text: str) -> None:
        """A step the stage cache answered without running it."""


class BatchProgress:
    """`bridge batch`: one `Progress` per model, told when each model starts and ends (from the
    models' threads). Silent by default; the CLI draws one live line per model."""

    def model(self, name: str) -> Progress:
        return Progress()

    def started(self, name: str) -> None:
        pass

    def finished(self, name: str, result) -> None:
        pass
