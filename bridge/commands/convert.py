"""`bridge convert SOURCE --target ... [--quantize ...]`"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from bridge.calibration import CalibrationOptions
from bridge.commands.common import RichProgress, print_outcome
from bridge.commands.parsing import floats, memory, size
from bridge.options import DEFAULT_TIMEOUT


class Layout(StrEnum):
    nhwc = "nhwc"
    source = "source"


class CoreMLRoute(StrEnum):
    onnx = "onnx"
    direct = "direct"


def command(
    source: Annotated[str, typer.Argument(help="Model: file.py:callable, package.module:callable, .onnx, "
                                               ".pt2, TorchScript, .keras, .h5 or a SavedModel folder.")],
    target: Annotated[list[str], typer.Option("--target", "-t", help="onnx, tflite, coreml (repeatable).")] = None,
    quantize: Annotated[list[str], typer.Option(help="TARGET=MODE[,MODE...] (repeatable), e.g. "
                                                     "tflite=fp32,fp16,int8.")] = None,
    input: Annotated[list[str], typer.Option("--input", help="NAME:D0,D1,...[:DTYPE] (repeatable).")] = None,
    dynamic: Annotated[list[str], typer.Option(help="NAME:AXIS kept dynamic (repeatable).")] = None,
    calibration: Annotated[Path, typer.Option(help="Folder of .npy/.npz/images, or one .npz.")] = None,
    mean: Annotated[str, typer.Option(help="Per-channel mean of 0-1 images, e.g. 0.485,0.456,0.406.")] = None,
    std: Annotated[str, typer.Option(help="Per-channel std dividing 0-1 images.")] = None,
    resize: Annotated[str, typer.Option(help="Resize calibration images to HxW (default: the input's).")] = None,
    threshold: Annotated[list[str], typer.Option(help="[MODE@][OUTPUT:]METRIC=VALUE overriding a parity "
                                                      "threshold (rel_l2, snr_db, cosine).")] = None,
    out: Annotated[Path, typer.Option(help="Output folder (default ./bridge-out/<model name>).")] = None,
    samples: Annotated[int, typer.Option(min=1, help="Parity samples.")] = 8,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic samples.")] = 0,
    tflite_layout: Annotated[Layout, typer.Option(help="Layout of 4-D image inputs in TFLite files.")] = Layout.nhwc,
    coreml_target: Annotated[str, typer.Option(help="Core ML deployment target, iOS15..iOS18 (default iOS16; "
                                                    "raised per mode when a mode needs newer).")] = None,
    coreml_image_input: Annotated[bool, typer.Option(help="Core ML image inputs take 0-255 pixels (ImageType): "
                                                          "scale 1/255, then --mean and --std.")] = False,
    coreml_route: Annotated[CoreMLRoute, typer.Option(help="onnx: our converter from the ONNX hub (every "
                                                           "source); direct: coremltools' own PyTorch/TensorFlow "
                                                           "frontends, for comparison.")] = CoreMLRoute.onnx,
    allow_flex: Annotated[bool, typer.Option(help="Ship TFLite files that need Flex (Select TF) ops.")] = False,
    trust_code: Annotated[bool, typer.Option(help="Load model files that can run embedded code "
                                                  "(TorchScript, pickles, .h5, SavedModel).")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds each stage may run.")] = DEFAULT_TIMEOUT,
    max_memory: Annotated[str, typer.Option(help="Address-space limit of each stage, e.g. 8G.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show the converters' own output.")] = False,
) -> None:
    """Convert SOURCE to every target and mode, check each artifact against the source, write report.json."""
    from bridge.conversion import ConvertOptions, convert

    options = ConvertOptions(
        targets=tuple(target or ("onnx", "tflite")),
        quantize=tuple(quantize or ()),
        inputs=tuple(input or ()),
        dynamic=tuple(dynamic or ()),
        thresholds=tuple(threshold or ()),
        calibration=CalibrationOptions(str(calibration) if calibration else None, floats(mean, "--mean"),
                                       floats(std, "--std"), size(resize)),
        out=str(out) if out else None,
        samples=samples,
        seed=seed,
        tflite_layout=tflite_layout.value,
        coreml_target=coreml_target,
        coreml_image_input=coreml_image_input,
        coreml_route=coreml_route.value,
        allow_flex=allow_flex,
        trust_code=trust_code,
        timeout=timeout,
        max_memory=memory(max_memory),
        verbose=verbose,
    )
    report = convert(source, options, RichProgress())
    print_outcome(report)
    raise typer.Exit(report.exit_code)
