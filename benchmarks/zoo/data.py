"""Realistic-looking inputs for the zoo's trained models, made locally and seeded.

Each generator returns a list of feeds (input name -> array, with the batch axis), already
preprocessed exactly as the model's own package does before calling onnxruntime, so bridge can take
them as `--calibration` data as they are. Text is drawn with Pillow's bundled FreeType font
(`ImageFont.load_default(size=...)`), so the pixels do not depend on the fonts a machine has.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

WORDS = ("invoice total amount date paid order number customer account balance tax receipt page "
         "shipping address phone email report summary table figure section chapter results method "
         "bridge model convert parity android iphone layout detection recognition network training "
         "Monday March 2024 No. Ref: Qty Price USD EUR #A-17 12.50 1,024.00 99% 07:45 www.example.org").split()


def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _phrase(rng: np.random.Generator, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS, rng.integers(lo, hi + 1)))


def _paper(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    tone = rng.integers(215, 256, 3)
    return Image.new("RGB", (w, h), tuple(int(t) for t in tone))


def _ink(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 90, 3))


def text_page(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """A document crop: lines and blocks of text in several sizes, some boxes, slight blur."""
    im = _paper(rng, w, h)
    d = ImageDraw.Draw(im)
    y = int(rng.integers(4, 30))
    while y < h - 12:
        size = int(rng.integers(12, 34))
        x = int(rng.integers(4, max(5, w // 3)))
        d.text((x, y), _phrase(rng, 2, 8), font=_font(size), fill=_ink(rng))
        if rng.random() < 0.15:
            x0, y0 = int(rng.integers(0, w // 2)), y + size + 4
            d.rectangle((x0, y0, x0 + int(rng.integers(40, w // 2)), y0 + int(rng.integers(20, 80))),
                        outline=_ink(rng), width=2)
            y += 60
        y += int(size * rng.uniform(1.3, 2.6))
    return im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.0, 0.8))))


def text_line(rng: np.random.Generator, height: int) -> Image.Image:
    """One cropped text line, as a detector hands it to a recognizer (tight, variable width)."""
    size = int(height * rng.uniform(0.6, 0.8))
    text = _phrase(rng, 1, 5)
    font = _font(size)
    left, top, right, bottom = font.getbbox(text)
    im = _paper(rng, right - left + 8, height)
    ImageDraw.Draw(im).text((4 - left, (height - (bottom - top)) // 2 - top), text, font=font, fill=_ink(rng))
    if rng.random() < 0.5:  # the angle classifier also sees upside-down lines
        im = im.rotate(180)
    return im


def photo(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """A smooth, photo-like scene: gradient sky/ground, blurred blobs of colour, sensor noise."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    top, bottom = rng.uniform(40, 230, 3), rng.uniform(20, 200, 3)
    img = top + (bottom - top) * (yy / h)[..., None] + rng.uniform(-30, 30) * (xx / w)[..., None]
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(3, 9))):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.05, 0.35) * min(w, h)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        d.ellipse((cx - r, cy - r * rng.uniform(0.5, 2), cx + r, cy + r), fill=colour)
    im = im.filter(ImageFilter.GaussianBlur(float(rng.uniform(1, 4))))
    arr = np.asarray(im, np.float32) + rng.normal(0, 3, (h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def table_page(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """A wired table as a scan shows it: a ruled grid of uneven rows and columns (some cells merged
    across two columns), a word or number in most cells, a caption above, slight blur."""
    im = _paper(rng, w, h)
    d = ImageDraw.Draw(im)
    x0, y0 = int(rng.integers(8, w // 8)), int(rng.integers(30, h // 6))
    x1, y1 = w - int(rng.integers(8, w // 8)), h - int(rng.integers(8, h // 8))
    d.text((x0, max(2, y0 - 26)), _phrase(rng, 2, 5), font=_font(18), fill=_ink(rng))
    cols = np.sort(rng.choice(np.arange(x0 + 30, x1 - 30), int(rng.integers(2, 7)), replace=False))
    rows = np.arange(y0, y1, int(rng.integers(28, 60)))
    xs, ink, width = [x0, *cols.tolist(), x1], _ink(rng), int(rng.integers(1, 3))
    for r, (top, bottom) in enumerate(zip(rows[:-1], rows[1:], strict=False)):
        merge = int(rng.integers(1, len(xs) - 1)) if r and rng.random() < 0.15 else -1
        for c, (left, right) in enumerate(zip(xs[:-1], xs[1:], strict=False)):
            if c != merge:  # the merged cell's inner rule is not drawn
                d.line((right, top, right, bottom), fill=ink, width=width)
            if rng.random() < 0.8 and right - left > 30:
                size = int(rng.integers(11, 18))
                d.text((left + 4, top + (bottom - top - size) // 2), _phrase(rng, 1, 2)[: (right - left) // 8],
                       font=_font(size), fill=_ink(rng))
        d.line((x0, top, x1, top), fill=ink, width=width)
    d.line((x0, rows[-1], x1, rows[-1]), fill=ink, width=width)
    d.line((x0, y0, x0, rows[-1]), fill=ink, width=width)
    return im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.0, 0.7))))


def center_square(im: Image.Image, side: int) -> Image.Image:
    """CenterNet's input affine (centre c, scale max(h, w)) as wired_table_rec applies it: the
    image scaled so its longer side is `side`, centred, the rest black."""
    r = side / max(im.width, im.height)
    return _centred(im, side, (max(1, round(im.width * r)), max(1, round(im.height * r))), 0)


def resize_pad(im: Image.Image, side: int) -> Image.Image:
    """rapid_table_det's ResizePad: longer side to `side` (sizes truncated, as it does), centred on white."""
    r = side / max(im.width, im.height)
    return _centred(im, side, (max(1, int(im.width * r)), max(1, int(im.height * r))), 255)


def _centred(im: Image.Image, side: int, size: tuple[int, int], fill: int) -> Image.Image:
    im = im.resize(size, Image.BILINEAR)
    canvas = Image.new("RGB", (side, side), (fill,) * 3)
    canvas.paste(im, ((side - im.width) // 2, (side - im.height) // 2))
    return canvas


def _table(rng: np.random.Generator) -> Image.Image:
    return table_page(rng, int(rng.integers(500, 1000)), int(rng.integers(300, 900)))


def _bgr(im: Image.Image) -> Image.Image:
    """Channels in cv2's order: the table packages read images with cv2.imread."""
    return Image.fromarray(np.ascontiguousarray(np.asarray(im)[..., ::-1]))


def normalize(im: Image.Image, mean, std, scale: float = 1 / 255) -> np.ndarray:
    """HWC 0-255 image -> NCHW float32 `(pixel * scale - mean) / std`, as PaddleOCR and friends do."""
    arr = np.asarray(im, np.float32) * scale
    if arr.ndim == 2:
        arr = arr[..., None]
    arr = (arr - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return arr.transpose(2, 0, 1)[None].astype(np.float32)


def rec_line(rng: np.random.Generator, height: int, width: int, mode: str = "RGB") -> np.ndarray:
    """PaddleOCR's recognizer/classifier preprocessing: resize to the height, keep the aspect ratio
    (capped at the width), normalize to [-1, 1], pad the rest of the width with 0."""
    im = text_line(rng, height).convert(mode)
    w = min(width, max(8, round(im.width * height / im.height)))
    arr = normalize(im.resize((w, height), Image.BILINEAR), 0.5, 0.5)
    out = np.zeros((1, arr.shape[1], height, width), np.float32)
    out[..., :w] = arr
    return out


def letterbox(im: Image.Image, side: int, fill: int = 114) -> Image.Image:
    """YOLO-style resize keeping the aspect ratio, padded with grey to a square."""
    r = side / max(im.width, im.height)
    im = im.resize((max(1, round(im.width * r)), max(1, round(im.height * r))), Image.BILINEAR)
    canvas = Image.new("RGB", (side, side), (fill,) * 3)
    canvas.paste(im, (0, 0))
    return canvas


def speech_like(rng: np.random.Generator, n: int, rate: int = 16000) -> np.ndarray:
    """A voiced, speech-like chunk (harmonics of a wandering pitch under a syllable envelope, plus
    noise), or silence with noise, in [-1, 1] as silero-vad expects."""
    t = np.arange(n) / rate
    if rng.random() < 0.3:
        return (rng.normal(0, 0.003, n)).astype(np.float32)
    f0 = rng.uniform(90, 250) * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(2, 6) * t))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 7) * t + rng.uniform(0, 6.3))
    x = rng.uniform(0.05, 0.4) * envelope * voice / 3 + rng.normal(0, 0.005, n)
    return np.clip(x, -1, 1).astype(np.float32)


def feeds_for(kind: str, spec: dict, count: int, seed: int, tokenizer_file: str | None = None) -> list[dict]:
    """`count` feeds for one model, by the calibration kind its manifest entry names."""
    rng = np.random.default_rng(seed)
    name = spec["input"]
    shape = spec["shape"]
    feeds = []
    for i in range(count):
        if kind == "ocr-page":
            _, _, h, w = shape
            feeds.append({name: normalize(text_page(rng, w, h), spec["mean"], spec["std"])})
        elif kind == "table-bgr":  # wired_table_rec: BGR (cv2) pixels/255, CenterNet mean/std
            im = center_square(_table(rng), shape[2])
            feeds.append({name: normalize(_bgr(im), spec["mean"], spec["std"])})
        elif kind == "table-bgr-01":  # rapid_table_det's edge detector: a table crop, BGR pixels/255
            feeds.append({name: normalize(_bgr(resize_pad(_table(rng), shape[2])), 0.0, 1.0)})
        elif kind == "ocr-line":
            feeds.append({name: rec_line(rng, shape[2], shape[3], "L" if shape[1] == 1 else "RGB")})
        elif kind == "ocr-line-01":  # ddddocr: grayscale 0-1, width resized to the input's
            im = text_line(rng, shape[2]).convert("L").resize((shape[3], shape[2]), Image.BILINEAR)
            feeds.append({name: normalize(im, 0.0, 1.0)})
        elif kind == "photo-yolo-01":
            feeds.append({name: normalize(letterbox(photo(rng, int(rng.integers(300, 640)), 480), shape[2]),
                                          0.0, 1.0)})
        elif kind == "page-yolo-255":
            im = letterbox(text_page(rng, 600, int(rng.integers(400, 800))), shape[2])
            feeds.append({name: normalize(im, 0.0, 1.0, scale=1.0)})
        elif kind == "speech":
            feed = {name: speech_like(rng, shape[1])[None]}
            for k, v in spec.get("extra", {}).items():  # recurrent state starts at zero; sr is a constant
                feed[k] = np.zeros(v["zeros"], np.float32) if "zeros" in v else np.asarray(v["value"], v["dtype"])
            feeds.append(feed)
        elif kind == "sentences":
            feeds.append(_tokenize(tokenizer_file, SENTENCES[i % len(SENTENCES)], shape[1]))
        else:
            raise ValueError(f"unknown calibration kind {kind!r}")
    return feeds


SENTENCES = [
    "A man is eating food.", "A man is riding a horse.", "The new movie is awesome.",
    "The cat sits outside on the warm stone wall.", "A woman is playing violin.",
    "Two men pushed carts through the woods.", "How do I convert a PyTorch model to TFLite?",
    "The quick brown fox jumps over the lazy dog.", "Parity checks block a release when outputs drift.",
    "Is it going to rain in Paris tomorrow?", "She sold the old bicycle at the Sunday market.",
    "Quantized models are smaller but may lose accuracy.", "The invoice total was 1,024 euros.",
    "A monkey is playing drums.", "Someone is slicing a tomato in the kitchen.",
    "The library opens at nine and closes at six.", "Core ML packages run on iPhone and Mac.",
    "We measured signal-to-noise ratio for every output.", "My flight was delayed by three hours.",
    "The children built a sandcastle near the pier.", "Please restart the router and try again.",
    "Sentence embeddings map similar meanings close together.", "He forgot his umbrella on the train.",
    "An orange tabby cat sleeps in the sun.",
]


def _tokenize(tokenizer_file: str, text: str, seq: int) -> dict[str, np.ndarray]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tokenizer_file)
    tok.enable_truncation(seq)
    tok.enable_padding(length=seq, pad_id=0, pad_token="[PAD]")
    enc = tok.encode(text)
    return {"input_ids": np.asarray([enc.ids], np.int64),
            "attention_mask": np.asarray([enc.attention_mask], np.int64)}
