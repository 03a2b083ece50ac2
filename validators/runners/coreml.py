"""Core ML artifacts: Core ML itself on macOS; elsewhere the reference executor (not yet built).

Until the executor lands, a Core ML artifact on Linux gets parity `not_executed` with the reason,
which fails the run (exit 1): an artifact nobody executed is never reported as matching.
"""

from __future__ import annotations

import platform

import numpy as np

from bridge.converters.base import Feed
from bridge.errors import RuntimeUnavailable
from bridge.lazy import require


class CoreMLRunner:
    runtime = "coreml"

    def load(self, path: str) -> None:
        if platform.system() != "Darwin":
            raise RuntimeUnavailable("no Core ML runtime on this platform (Core ML runs only on macOS); "
                                     "the reference executor for .mlpackage files is not available yet")
        ct = require("coremltools")
        self.model = ct.models.MLModel(path)

    def infer(self, feed: Feed) -> Feed:
        return {k: np.asarray(v) for k, v in self.model.predict(feed).items()}
