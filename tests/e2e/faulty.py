"""`bridge convert` / `bridge validate` through the Python API with faults injected, printing and
exiting as the console script does. The crash tests run this in a subprocess: production code
reads no fault from the environment; tests pass `bridge.stages.Fault` objects in.

    python tests/e2e/faulty.py --fault tflite-convert:abort convert model.onnx --target tflite --out out
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from bridge import ConvertOptions, ValidateOptions, convert, validate
    from bridge.base.errors import BridgeError
    from bridge.commands.common import RichProgress, print_outcome
    from bridge.stages import Fault

    p = argparse.ArgumentParser()
    p.add_argument("--fault", action="append", default=[], help="POINT[:HOW]")
    p.add_argument("command", choices=["convert", "validate"])
    p.add_argument("paths", nargs="+")
    p.add_argument("--target", action="append")
    p.add_argument("--quantize", action="append", default=[])
    p.add_argument("--out")
    p.add_argument("--report")
    p.add_argument("--timeout", type=float, default=1800.0)
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--no-localize", action="store_true")
    a = p.parse_args(argv)
    faults = [Fault(*f.split(":", 1)) for f in a.fault]
    try:
        if a.command == "convert":
            options = ConvertOptions(targets=tuple(a.target or ("onnx", "tflite")), quantize=tuple(a.quantize),
                                     out=a.out, timeout=a.timeout, verbose=a.verbose,
                                     localize=not a.no_localize)
            result = convert(a.paths[0], options, RichProgress(), faults=faults)
        else:
            options = ValidateOptions(report=a.report, timeout=a.timeout, verbose=a.verbose)
            result = validate(a.paths[0], a.paths[1:], options, RichProgress(), faults=faults)
    except BridgeError as e:
        print(f"bridge: error: {e}", file=sys.stderr)
        return e.exit_code
    print_outcome(result)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
