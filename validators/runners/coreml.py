"""Core ML artifacts: Core ML itself on macOS, our reference executor everywhere else.

The report says which ran (`runtime`: "coreml" or "coreml-reference"). The executor reads the saved
package (spec and weight.bin), so it checks exactly the file that ships; an op it lacks makes
parity `not_executed`, never a silent pass.
"""

from __future__ import annotations

import platform

import numpy as np

from bridge.converters.base import Feed
from bridge.lazy import require


class CoreMLRunner:
    runtime = "coreml"

    def load(self, path: str) -> None:
        self._reference = None
        if platform.system() != "Darwin":
            from bridge.validators.runners.coreml_reference import ReferenceRunner

            self._reference = ReferenceRunner()
            self._reference.load(path)  # raises RuntimeUnavailable naming every unsupported op
            self.runtime = ReferenceRunner.runtime
            return
        ct = require("coremltools")
        self.model = ct.models.MLModel(path)

    def infer(self, feed: Feed) -> Feed:
        if self._reference is not None:
            return self._reference.infer(feed)
        return {k: np.asarray(v) for k, v in self.model.predict(feed).items()}
