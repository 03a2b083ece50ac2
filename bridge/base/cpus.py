"""How many threads a stage's frameworks may use.

An executor that runs stages side by side gives each the CPUs it asked for (`Needs.cpus`, one by
default), and the stage's child starts with the standard OpenMP/BLAS variables set to that number:
torch and numpy's BLAS read them when they load. Our onnxruntime sessions size their thread pool
from the same variable (`onnxruntime_options`). Two stages on two cores then use one thread each
instead of two each: an OpenMP pool that finds its cores busy spins (measured on this project's
2-core machine under load: MobileNetV2 forward 1.3 s with 2 threads, 0.05 s with 1; outputs
bitwise equal).
"""

from __future__ import annotations

import os

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def thread_environment(threads: int | None) -> dict[str, str]:
    """The variables a child starts with to use `threads` threads (none: the frameworks' default)."""
    return {v: str(threads) for v in THREAD_VARIABLES} if threads else {}


def allotted() -> int:
    """This process's thread allotment, 0 when none was given."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() else 0


def onnxruntime_options(ort):
    """`ort.SessionOptions()` with its intra-op pool sized to the allotment."""
    opts = ort.SessionOptions()
    threads = allotted()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = threads
    return opts
