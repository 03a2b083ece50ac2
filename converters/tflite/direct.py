"""ONNX -> float32 .tflite with onnx2tf 2.x's `flatbuffer_direct` backend: no TensorFlow.

onnx2tf's options are set deliberately:
- `onnx_graph=` (in memory), never `input_onnx_file_path=`: some of its paths write the graph
  they inferred back over the input file.
- `tflite_backend="flatbuffer_direct"`: 2.x's default, spelled out so a change of default shows.
  It builds the flatbuffer itself from onnx2tf's own IR; the legacy `tf_converter` backend needs
  TensorFlow and has regressions of its own in 2.x (it ignores the keep-NCHW list and freezes
  dynamic dims).
- `not_use_onnxsim=True`: the hub is already simplified by onnxslim; onnxsim would run again
  as a subprocess.
- the keep-layout lists from `layout.plan_inputs`.
- validation stays off (its default in 2.x): bridge checks parity itself, and nothing reads
  sample images or reaches the network.
- custom ops stay off (the default): an op without a TFLite builtin fails with onnx2tf's reason
  instead of becoming a CUSTOM op a stock runtime rejects.

onnx2tf writes `<name>_float32.tflite`, `<name>_float16.tflite` (float16 end to end: a mode of
its own that stock ai-edge-litert kernels reject; not used), the schema it built with, and
`<name>_tensor_correspondence_report.json`, which maps each ONNX node output to the TFLite tensor
that holds it: kept for later per-layer localisation (`correspondence`).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from bridge.base.errors import ConversionError
from bridge.base.lazy import require
from bridge.converters.tflite.layout import InputPlan


@dataclass(frozen=True)
class Float32File:
    path: Path
    correspondence: Path | None  # onnx2tf's tensor-correspondence report, when it wrote one


def convert_float(model, folder: Path, plan: InputPlan, node_names: dict[str, str]) -> Float32File:
    """onnx2tf on `model` (an onnx.ModelProto, not modified), writing into `folder`."""
    onnx2tf = require("onnx2tf")
    folder.mkdir(parents=True, exist_ok=True)
    log = io.StringIO()
    cwd = os.getcwd()
    try:
        os.chdir(folder)  # anything onnx2tf drops in the working directory lands in the scratch folder
        with contextlib.redirect_stdout(log):
            onnx2tf.convert(
                onnx_graph=model,
                output_folder_path=str(folder),
                tflite_backend="flatbuffer_direct",
                not_use_onnxsim=True,
                # Its node-naming step (sng4onnx) rebuilds the graph and runs onnx's shape inference
                # over every weight, then, given a graph rather than a file, throws the result away:
                # 0.5 s and two more copies of the weights on ResNet50, byte-identical files without.
                not_use_opname_auto_generate=True,
                keep_ncw_or_nchw_or_ncdhw_input_names=list(plan.keep_channel_first) or None,
                keep_nwc_or_nhwc_or_ndhwc_input_names=list(plan.keep_channel_last) or None,
                non_verbose=True,
                verbosity="error",
            )
    except (Exception, SystemExit) as e:  # onnx2tf raises anything, or exits
        raise onnx2tf_error(e, log.getvalue(), node_names) from None
    finally:
        os.chdir(cwd)
    found = sorted(folder.glob("*_float32.tflite"))
    if len(found) != 1:
        raise ConversionError(f"onnx2tf wrote {sorted(p.name for p in folder.iterdir())}, expected one "
                              "*_float32.tflite", stage="tflite-convert")
    stem = found[0].name[: -len("_float32.tflite")]
    report = folder / f"{stem}_tensor_correspondence_report.json"
    return Float32File(found[0], report if report.exists() else None)


def onnx2tf_error(e: BaseException, log: str, node_names: dict[str, str]) -> ConversionError:
    """onnx2tf's failure on one line, with the ONNX node and op type where it names them (its
    validation errors carry them; other failures leave them in the log)."""
    node = getattr(e, "node_name", None) or _last(r"onnx_op_name:\s*(\S+)", log)
    op_type = getattr(e, "node_op", None) or _last(r"onnx_op_type:\s*(\S+)", log)
    node = node_names.get(node, node) if node else None
    text = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    message = text[-1] if text else type(e).__name__
    where = f" at {op_type} node {node}" if node else ""
    return ConversionError(f"onnx2tf failed{where}: {message[:300]}", stage="tflite-convert",
                           node=node, op_type=op_type)


def _last(pattern: str, text: str) -> str | None:
    found = re.findall(pattern, re.sub(r"\x1b\[[0-9;]*m", "", text))
    return found[-1] if found else None


def correspondence(report: Path | None) -> dict:
    """onnx2tf's tensor-correspondence report, compacted for the artifact's details: its summary and
    each ONNX node output's TFLite tensor (those still in the file). Per-layer localisation can
    read both files' tensors by these names."""
    if report is None:
        return {}
    try:
        data = json.loads(report.read_text())
    except (OSError, ValueError):
        return {}
    tensors = {r["onnx_output_name"]: r["resolved_tflite_tensor_name"] for r in data.get("records", [])
               if r.get("exists_in_final_model") and r.get("onnx_output_name") and r.get("resolved_tflite_tensor_name")}
    return {"summary": data.get("summary", {}), "tensors": tensors}


def restore_float16_outputs(path: Path, names: set[str]) -> list[str]:
    """Make the graph outputs in `names` (float16 in the hub) float16 in the file again, where
    onnx2tf wrote them as float32 by a CAST: onnx2tf 2.6.9 turns a cast to float16 into a cast to
    float32, so the values were never rounded to float16. TFLite's CAST kernel writes float16 (on
    XNNPACK too). Returns the outputs changed."""
    from bridge.converters.tflite import flatbuffer as fbu

    fb = fbu.schema()
    model = fbu.load(path.read_bytes())
    changed = []
    for sg in model.subgraphs[:1]:
        producers = {out: op for op in sg.operators or [] for out in (op.outputs if op.outputs is not None else ())}
        for index in sg.outputs if sg.outputs is not None else ():
            tensor = sg.tensors[index]
            name = tensor.name.decode() if isinstance(tensor.name, bytes) else tensor.name
            op = producers.get(index)
            if name not in names or tensor.type != fb.TensorType.FLOAT32 or op is None \
                    or fbu.code_name(model.operatorCodes[op.opcodeIndex]) != "CAST":
                continue
            tensor.type = fb.TensorType.FLOAT16
            if op.builtinOptions is not None and hasattr(op.builtinOptions, "outDataType"):
                op.builtinOptions.outDataType = fb.TensorType.FLOAT16
            changed.append(name)
    if changed:
        path.write_bytes(fbu.save(model))
    return changed
