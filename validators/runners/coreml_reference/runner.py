"""The runner interface over the reference executor (`load(path)`, `infer(feed)`)."""

from __future__ import annotations

import numpy as np

from bridge.base.arrays import Feed

from .executor import Executor
from .loader import load_package


class ReferenceRunner:
    """Core ML artifacts where Core ML cannot run (Linux): the saved .mlpackage executed in numpy.

    Inputs are cast to the model's declared input dtypes (int64 -> int32, float64 -> float32), as
    Core ML would take them; outputs come back in their declared dtypes under the model's names.
    """

    runtime = "coreml-reference"

    def load(self, path: str) -> None:
        self.package = load_package(path)
        self.executor = Executor(self.package.program, self.package.function)

    def infer(self, feed: Feed) -> Feed:
        outputs = self.executor.run(feed)
        return {name: np.asarray(outputs[name]) for name in self.package.output_names}
