"""A numpy reference executor for saved Core ML ML Programs (.mlpackage), so Core ML artifacts get
a parity verdict on Linux, where coremltools cannot run a model.

    runner = ReferenceRunner(); runner.load("model.mlpackage")
    outputs = runner.infer({"x": array})

`loader` reads the package (spec + weight.bin) back into MIL, `executor` checks every op is
supported and runs them in order, `ops` holds one numpy function per MIL op type.
"""

from .runner import ReferenceRunner

__all__ = ["ReferenceRunner"]
