"""Exports with dynamic dims convert once their inputs are fixed (issue 11): the hub writes the
`--input` sizes in, folds every shape subgraph, and every lane gets a static graph; a `--dynamic`
axis stays symbolic in the hub and is checked at two sizes.

The models are exported here the way other tools export them: a PaddleOCR-style recognizer
(height and width dynamic, `Shape -> Gather -> Concat` feeding a Reshape into an attention MatMul,
a height squeeze) and a `transformers` BERT (batch and sequence dynamic, `torch.onnx.export` with
`dynamic_axes`, as the Hugging Face docs show). When the zoo cache is present
(`benchmarks/zoo/build.py`), its trained PP-OCRv4 recognizer and all-MiniLM-L6-v2 run too.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import artifact, bridge, report

pytestmark = pytest.mark.slow

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("coremltools")


def shape_ops(path: Path) -> int:
    return sum(n.op_type in ("Shape", "Size") for n in onnx.load(str(path)).graph.node)


def input_dims(path: Path) -> dict[str, list]:
    return {i.name: [d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim]
            for i in onnx.load(str(path)).graph.input}


def assert_passed(rep: dict, *targets: tuple[str, str]) -> dict[str, float]:
    """Every listed artifact converted and passed; returns each one's worst rel_l2 / snr_db."""
    figures = {}
    for target, mode in targets:
        a = artifact(rep, target, mode)
        assert a["error"] is None and a["parity"]["passed"], (target, mode, a["error"], a["parity"].get("reason"))
        outs = a["parity"]["outputs"].values()
        figures[f"{target}/{mode}"] = (max(o["rel_l2"] for o in outs), min(o["snr_db"] for o in outs))
    return figures


# ------------------------------------------------------------------ a PaddleOCR-style recognizer


class PaddleStyleRecognizer(torch.nn.Module):
    """PP-OCR's SVTR recognizer in small: a conv stem, multi-head self-attention over the flattened
    feature map, the height averaged out and squeezed, a CTC-style softmax per column. Every reshape
    reads its sizes from the input at run time (`Shape -> Gather -> Concat -> Reshape`), as
    paddle2onnx writes them, and they feed the attention MatMuls."""

    def __init__(self, channels: int = 16, heads: int = 2, classes: int = 37):
        super().__init__()
        self.heads = heads
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, channels, 3, stride=2, padding=1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(channels, channels, 3, stride=(2, 1), padding=1))
        self.qkv = torch.nn.Linear(channels, 3 * channels)
        self.proj = torch.nn.Linear(channels, channels)
        self.head = torch.nn.Linear(channels, classes)

    def forward(self, x):
        h = self.stem(x)
        n, c, height, width = h.shape
        h = h.flatten(2).transpose(1, 2)  # [N, H*W, C]
        length, dim = h.shape[1], c // self.heads
        q, k, v = self.qkv(h).reshape(n, length, 3, self.heads, dim).permute(2, 0, 3, 1, 4)
        attention = torch.softmax(q @ k.transpose(-2, -1) * dim ** -0.5, dim=-1)
        h = h + self.proj((attention @ v).transpose(1, 2).reshape(n, length, c))
        h = h.transpose(1, 2).reshape(n, c, height, width).mean(dim=2, keepdim=True).squeeze(2).transpose(1, 2)
        return torch.softmax(self.head(h), dim=-1)


def export_paddle_style(path: Path) -> Path:
    torch.manual_seed(0)
    model = PaddleStyleRecognizer().eval()
    torch.onnx.export(model, (torch.randn(1, 3, 32, 96),), str(path), input_names=["x"], output_names=["softmax"],
                      dynamic_axes={"x": {0: "batch", 2: "height", 3: "width"}, "softmax": {0: "batch", 1: "steps"}},
                      opset_version=17, dynamo=False)
    return path


def test_paddleocr_style_export_with_fixed_input_converts_to_every_lane(tmp_path):
    source = export_paddle_style(tmp_path / "rec.onnx")
    assert shape_ops(source) >= 2 and input_dims(source)["x"] == ["batch", 3, "height", "width"]
    out = tmp_path / "out"
    r = bridge("convert", source, "--input", "x:1,3,32,96", "--target", "onnx", "--target", "tflite", "--target",
               "coreml", "--quantize", "tflite=fp32,fp16", "--quantize", "coreml=fp32,fp16", "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = report(out)
    figures = assert_passed(rep, ("onnx", "fp32"), ("tflite", "fp32"), ("tflite", "fp16"), ("coreml", "fp32"),
                            ("coreml", "fp16"))
    assert all(rel <= 1e-5 for key, (rel, _) in figures.items() if key.endswith("fp32")), figures
    hub = rep["hub"]["folding"]
    assert hub["inputs"] == {"x": [1, 3, 32, 96]} and hub["written"] == ["x"]
    assert hub["removed"]["Shape"] >= 2 and hub["shape_ops_left"] == {}
    onnx_file = out / artifact(rep, "onnx", "fp32")["path"]
    assert input_dims(onnx_file) == {"x": [1, 3, 32, 96]} and shape_ops(onnx_file) == 0


# ------------------------------------------------------------------ a transformers text model


def export_bert(path: Path) -> Path:
    """A small BERT from transformers' own classes (seeded weights, tanh GELU so the TFLite lane
    needs no Flex op), exported with dynamic batch and sequence axes."""
    transformers = pytest.importorskip("transformers")

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            cfg = transformers.BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                          intermediate_size=128, hidden_act="gelu_new", max_position_embeddings=128)
            self.bert = transformers.BertModel(cfg, add_pooling_layer=False)

        def forward(self, input_ids, attention_mask):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask)[0]

    torch.manual_seed(0)
    model = Encoder().eval()
    ids, mask = torch.randint(0, 1000, (1, 16)), torch.ones(1, 16, dtype=torch.int64)
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
            "last_hidden_state": {0: "batch", 1: "sequence"}}
    torch.onnx.export(model, (ids, mask), str(path), input_names=["input_ids", "attention_mask"],
                      output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17, dynamo=False)
    return path


def text_samples(folder: Path, count: int = 12, seq: int = 16) -> Path:
    """Token ids over the vocabulary and 0/1 masks with right padding, as a tokenizer gives them
    (bridge's own integers for an ONNX source are 0-9: a mask of 2-9 means nothing)."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    for i in range(count):
        length = int(rng.integers(seq // 2, seq + 1))
        mask = (np.arange(seq) < length).astype(np.int64)[None]
        np.savez(folder / f"{i:02d}.npz", input_ids=rng.integers(0, 1000, (1, seq)) * mask, attention_mask=mask)
    return folder


def test_transformers_text_model_with_fixed_input_converts_to_every_lane(tmp_path):
    source = export_bert(tmp_path / "bert.onnx")
    assert shape_ops(source) >= 4
    out = tmp_path / "out"
    r = bridge("convert", source, "--input", "input_ids:1,16", "--input", "attention_mask:1,16",
               "--calibration", text_samples(tmp_path / "tokens"), "--target", "onnx", "--target", "tflite",
               "--target", "coreml", "--quantize", "tflite=fp32", "--quantize", "coreml=fp32,fp16", "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = report(out)
    figures = assert_passed(rep, ("onnx", "fp32"), ("tflite", "fp32"), ("coreml", "fp32"), ("coreml", "fp16"))
    assert figures["coreml/fp16"][1] >= 40, figures
    hub = rep["hub"]["folding"]
    assert hub["inputs"] == {"input_ids": [1, 16], "attention_mask": [1, 16]} and hub["shape_ops_left"] == {}
    assert rep["source"]["shapes"] == "static"


def test_transformers_text_model_keeps_a_dynamic_sequence(tmp_path):
    """--dynamic on the sequence axis: the batch folds, the sequence stays symbolic in the hub, and
    each artifact is checked at 16 and 32 tokens."""
    source = export_bert(tmp_path / "bert.onnx")
    out = tmp_path / "out"
    r = bridge("convert", source, "--input", "input_ids:1,16", "--input", "attention_mask:1,16", "--dynamic",
               "input_ids:1", "--dynamic", "attention_mask:1", "--target", "onnx", "--target", "coreml",
               "--quantize", "coreml=fp32,fp16", "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = report(out)
    assert_passed(rep, ("onnx", "fp32"), ("coreml", "fp32"), ("coreml", "fp16"))
    assert artifact(rep, "coreml", "fp32")["parity"]["sizes"] == {"input_ids:1": [16, 32], "attention_mask:1": [16, 32]}
    hub = rep["hub"]["folding"]
    assert hub["inputs"] == {"input_ids": [1, "sequence"], "attention_mask": [1, "sequence"]}
    assert hub["symbolic_inference"] == "used" and 0 < sum(hub["shape_ops_left"].values()) < shape_ops(source)
    assert input_dims(out / artifact(rep, "onnx", "fp32")["path"])["input_ids"] == [1, "sequence"]


# ------------------------------------------------------------------ trained models from the zoo, when built

ZOO = Path(os.environ.get("BRIDGE_ZOO_CACHE", "~/.cache/bridge-zoo")).expanduser() / "models"


@pytest.mark.skipif(not (ZOO / "ppocrv4-rec").is_dir(), reason="the zoo cache is not built (benchmarks/zoo)")
def test_trained_ppocrv4_recognizer_on_rendered_text_lines(tmp_path):
    """The paddle2onnx export from rapidocr's wheel (every dim dynamic), fed rendered text lines."""
    model = ZOO / "ppocrv4-rec"
    out = tmp_path / "out"
    r = bridge("convert", model / "ch_PP-OCRv4_rec_infer.onnx", "--input", "x:1,3,48,320", "--calibration",
               model / "calibration", "--target", "onnx", "--target", "tflite", "--target", "coreml", "--quantize",
               "tflite=fp32,fp16", "--quantize", "coreml=fp32,fp16", "--out", out, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = report(out)
    figures = assert_passed(rep, ("onnx", "fp32"), ("tflite", "fp32"), ("tflite", "fp16"), ("coreml", "fp32"),
                            ("coreml", "fp16"))
    assert rep["hub"]["folding"]["removed"]["Shape"] >= 4 and rep["hub"]["folding"]["shape_ops_left"] == {}, figures
