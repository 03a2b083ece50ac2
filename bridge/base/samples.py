"""Calibration and parity samples: from the user's data when given, else seeded synthetic data.

Parity samples are always held apart from calibration samples: with user data, the last
`parity_count` items are parity samples and never calibrate; without, the two sets come from
different seeds. Images become model inputs with `--mean/--std/--resize`, in the units and layout
the source expects.
"""

from __future__ import annotations

import hashlib
import os
import stat
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy loads where arrays are touched: a warm run reads none (~50 ms)
    import numpy as np

from bridge.base.bindings import Pixels
from bridge.base.errors import UsageError, one_line
from bridge.base.sources import check_archive
from bridge.base.tensors import TensorSpec, Values, image_channels, second_size, synthetic_samples

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
ARRAY_SUFFIXES = {".npy", ".npz"}
SYNTHETIC_CALIBRATION = 32


@dataclass(frozen=True)
class CalibrationOptions:
    path: str | None = None
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    resize: tuple[int, int] | None = None  # (height, width); default: the input's
    limit: int = 200
    pixels: bool = False  # synthetic image inputs are whole 0-255 pixels, normalized (an artifact takes pixels)
    parity_path: str | None = None  # --parity-data: the parity samples (same loader, same --mean/--std/--resize)


@dataclass(frozen=True)
class SampleOrigin:
    """Where a set of samples came from, as the report states it: `synthetic` (seeded random inputs),
    `calibration` (held out of the --calibration data, never calibrated on) or `user` (the user's
    data as given)."""

    origin: str  # synthetic | calibration | user
    count: int
    seed: int | None = None  # synthetic sets
    path: str | None = None  # sets read from the user's data
    detail: str | None = None  # synthetic sets: how each input was drawn

    def __str__(self) -> str:
        if self.path is None:
            return f"synthetic (seed {self.seed})" + (f": {self.detail}" if self.detail else "")
        return f"{self.path} ({self.count} samples)"

    def to_json(self) -> dict:
        out: dict = {"origin": self.origin, "count": self.count}
        if self.seed is not None:
            out["seed"] = self.seed
        if self.path is not None:
            out["path"] = self.path
        if self.detail is not None:
            out["detail"] = self.detail
        return out


@dataclass
class Samples:
    parity: list[dict[str, np.ndarray]]
    calibration: list[dict[str, np.ndarray]]
    origin: SampleOrigin  # of the calibration samples
    warnings: list[str]
    parity_origin: SampleOrigin


MAX_FEED_BYTES = 4 << 30  # every parity sample together; each is held by several stages


def split_samples(opts: CalibrationOptions, specs: list[TensorSpec], channel_last: bool, count: int,
                  seed: int) -> Samples:
    """Parity and calibration samples for `specs`, always disjoint.

    Parity samples come from `--parity-data`; else `count` held out of `--calibration` when it has
    enough; else synthetic ones that look like the model's inputs: drawn from the example input's
    values (or the calibration data's), pixel images for image inputs with neither, integers in
    range. Standard-normal noise is the last resort, for a float input nothing describes."""
    check_channels(opts, specs, channel_last)
    check_feed_size(specs, count)
    data = load(opts, specs, channel_last) if opts.path else None
    dynamic = any(s.dynamic for s in specs)
    warnings: list[str] = []
    if opts.parity_path:
        parity = load(replace(opts, path=opts.parity_path, limit=count), specs, channel_last, flag="--parity-data")
        parity_origin = SampleOrigin("user", len(parity), path=opts.parity_path)
        if dynamic:
            warnings.append("dynamic axes are checked only at the sizes of the --parity-data samples")
        if data is not None:
            data = _disjoint(data, parity)
    elif data is not None and len(data) >= count + 4 and not dynamic:
        parity, data = data[-count:], data[:-count]
        parity_origin = SampleOrigin("calibration", count, path=opts.path)
        warnings.append(f"parity runs on {count} samples held out of {opts.path}")
    else:
        if data is not None:  # too few to hold some out: synthetic samples drawn like the data
            specs = [replace(s, values=Values.of([f[s.name] for f in data], "calibration data") or s.values)
                     for s in specs]
            warnings.append(f"{opts.path} has too few samples to hold some out: parity runs on synthetic "
                            "inputs drawn from its values")
        parity, parity_origin = synthetic_parity(specs, channel_last, count, seed, opts)
    if data is None:
        calibration = synthetic_samples(specs, SYNTHETIC_CALIBRATION, seed + 1).feeds
        calibration = _pixels_where_needed(calibration, specs, channel_last, opts, seed + 1)
        warnings.append("no --calibration data: quantized modes are calibrated on synthetic "
                        "random inputs, which may not reflect real activation ranges")
        origin = SampleOrigin("synthetic", len(calibration), seed=seed + 1)
    else:
        calibration, origin = data, SampleOrigin("user", len(data), path=opts.path)
    return Samples(parity, calibration, origin, warnings, parity_origin)


def synthetic_parity(specs: list[TensorSpec], channel_last: bool, count: int, seed: int,
                     opts: CalibrationOptions) -> tuple[list[dict[str, np.ndarray]], SampleOrigin]:
    """`count` seeded samples at the given sizes, and `count` more with every dynamic axis at a
    second size (a dynamic artifact is proven at two sizes); with how each input was drawn."""
    feeds = synthetic_samples(specs, count, seed).feeds
    if any(s.dynamic for s in specs):
        feeds += synthetic_samples([_grow(s) for s in specs], count, seed + 7919).feeds
    feeds = _pixels_where_needed(feeds, specs, channel_last, opts, seed)
    pixels = {s.name for s in _pixel_inputs(specs, channel_last, opts)}
    how = []
    for s in specs:
        if s.name in pixels:
            how.append(f"{s.name}: pixel images" + (" normalized by --mean/--std" if opts.mean or opts.std else
                                                    " in [0, 1]"))
        elif s.dtype.startswith("float") and s.values is not None:
            v = s.values
            how.append(f"{s.name}: drawn from its {v.origin} values [{v.quantiles[0]:.4g}, {v.quantiles[-1]:.4g}]")
        elif s.dtype.startswith("float"):
            how.append(f"{s.name}: standard normal (no example input or data describes it: give --parity-data)")
        elif s.dtype != "bool":
            lo, hi = s.int_range or (0, 10)
            how.append(f"{s.name}: integers in [{lo}, {hi})")
    return feeds, SampleOrigin("synthetic", len(feeds), seed=seed, detail="; ".join(how))


def check_feed_size(specs: list[TensorSpec], count: int) -> None:
    """Inputs declared too large to sample (a hostile or mistaken shape) are bad usage, not an
    out-of-memory crash minutes later."""
    grown = [_grow(s) for s in specs] if any(s.dynamic for s in specs) else []
    total = count * sum(s.nbytes for s in [*specs, *grown])
    if total > MAX_FEED_BYTES:
        biggest = max(specs, key=lambda s: s.nbytes)
        raise UsageError(f"{count} parity samples of these inputs take {total / (1 << 30):.1f} GiB (the limit is "
                         f"{MAX_FEED_BYTES >> 30} GiB); input {biggest.name} is {list(biggest.shape)}: give a smaller "
                         "shape with --input, or fewer --samples")


def _grow(s: TensorSpec) -> TensorSpec:
    for axis in s.dynamic:
        s = s.with_size(axis, second_size(s.shape[axis]))
    return s


def _pixel_inputs(specs: list[TensorSpec], channel_last: bool, opts: CalibrationOptions) -> list[TensorSpec]:
    """Image inputs that get pixel images: all of them when an artifact takes pixels, else those
    whose source gives no example values to draw from."""
    return [s for s in specs if s.dtype.startswith("float") and image_channels(s, channel_last) in (1, 3)
            and (opts.pixels or s.values is None)]


def _pixels_where_needed(feeds, specs, channel_last, opts, seed):
    images = _pixel_inputs(specs, channel_last, opts)
    return pixel_images(feeds, images, channel_last, opts, seed) if images else feeds


def _disjoint(data: list[dict[str, np.ndarray]], parity: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """Calibration data without the parity samples: a sample that calibrated a file vouches for nothing."""
    held = {_digest(f) for f in parity}
    kept = [f for f in data if _digest(f) not in held]
    if not kept:
        raise UsageError("every --calibration sample is also a --parity-data sample: "
                         "give parity data the calibration never saw")
    return kept


def _digest(feed: dict[str, np.ndarray]) -> str:
    import numpy as np
    h = hashlib.sha256()
    for name in sorted(feed):
        a = np.ascontiguousarray(feed[name])
        h.update(f"{name}:{a.dtype}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def check_channels(opts: CalibrationOptions, specs: list[TensorSpec], channel_last: bool) -> None:
    """`--mean`/`--std` hold one value or one per channel of every image input they normalize."""
    if not (opts.mean or opts.std):
        return
    images = [(s, image_channels(s, channel_last)) for s in specs if s.dtype.startswith("float")]
    images = [(s, c) for s, c in images if c]
    if not images:
        raise UsageError("--mean/--std normalize image inputs (4-D, 1, 3 or 4 channels); the model's inputs are "
                         + ", ".join(f"{s.name} {list(s.shape)}" for s in specs))
    for flag, values in (("--mean", opts.mean), ("--std", opts.std)):
        for s, channels in images:
            if values and len(values) not in (1, channels):
                raise UsageError(f"{flag} has {len(values)} values; image input {s.name} {list(s.shape)} has "
                                 f"{channels} channel(s): give one value or {channels}")


def pixel_images(feeds: list[dict[str, np.ndarray]], specs: list[TensorSpec], channel_last: bool,
                 opts: CalibrationOptions, seed: int) -> list[dict[str, np.ndarray]]:
    """`feeds` with every image input in `specs` replaced by seeded whole-valued 0-255 pixels, normalized with
    `--mean/--std`: an artifact that takes pixels (`--coreml-image-input`) then gets exactly the
    values a camera frame can hold, and every other artifact the same image in its own units."""
    import numpy as np
    rng = np.random.default_rng(seed + 104729)
    images = specs
    out = []
    for feed in feeds:
        feed = dict(feed)
        for s in images:
            shape = feed[s.name].shape
            channels = shape[3] if channel_last else shape[1]
            axis = 3 if channel_last else 1
            norm = Pixels.per_channel(opts.mean, opts.std, channels)
            pixels = rng.integers(0, 256, shape).astype(np.float32)
            mean, std = (np.asarray(v, np.float32).reshape([channels if a == axis else 1 for a in range(4)])
                         for v in (norm.mean, norm.std))
            feed[s.name] = ((pixels / np.float32(255.0) - mean) / std).astype(s.dtype)
        out.append(feed)
    return out


def load(opts: CalibrationOptions, specs: list[TensorSpec], channel_last: bool,
         flag: str = "--calibration") -> list[dict[str, np.ndarray]]:
    root = Path(opts.path)
    if not root.exists():
        raise UsageError(f"{flag} {root}: no such file or folder")
    if root.is_file():
        if root.suffix != ".npz":
            raise UsageError(f"{flag} {root}: a single file must be an .npz (one array per input name)")
        return _from_npz(_regular(root, root.parent), specs)[: opts.limit]
    files = sorted(_regular(p, root) for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES | ARRAY_SUFFIXES)
    if not files:
        raise UsageError(f"{flag} {root}: no .npy, .npz, .png or .jpg files in it")
    feeds: list[dict[str, np.ndarray]] = []
    for f in files:
        if len(feeds) >= opts.limit:
            break
        suffix = f.suffix.lower()
        if suffix == ".npz":
            feeds += _from_npz(f, specs)
        elif suffix == ".npy":
            feeds += _from_npy(f, specs)
        else:
            feeds.append(_from_image(f, specs, channel_last, opts))
    return feeds[: opts.limit]


def _regular(path: Path, root: Path) -> Path:
    """A data file must be a regular file inside the data folder: a FIFO would hang the reader, a
    symlink out of the folder would read what the user never chose."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise UsageError(f"{path}: cannot be read ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{path}: not a regular file (a FIFO, device or folder cannot be data)")
    if path.is_symlink() and not path.resolve().is_relative_to(root.resolve()):
        raise UsageError(f"{path}: a symlink out of {root}; copy the file in instead")
    return path


def _array(load, path: Path) -> np.ndarray:
    """np.load without pickles, as a one-line usage error when the file is not a numeric array."""
    try:
        arr = load()
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise UsageError(f"{path}: not a readable numeric array ({one_line(str(e))[:200]})") from None
    if arr.dtype.kind not in "biuf":
        raise UsageError(f"{path}: an array of dtype {arr.dtype}; calibration and parity data must be numeric")
    return arr


def _batched(arr: np.ndarray, spec: TensorSpec, where: Path) -> list[np.ndarray]:
    """An array is one sample (the input's shape, or without its batch axis) or a stack of them."""
    shape = tuple(spec.shape)
    if arr.shape == shape:
        return [arr.astype(spec.dtype)]
    if arr.shape == shape[1:]:
        return [arr[None].astype(spec.dtype)]
    if arr.shape[1:] == shape[1:] and shape[0] == 1:
        return [a[None].astype(spec.dtype) for a in arr]
    raise UsageError(f"{where}: array of shape {list(arr.shape)} does not fit input {spec.name} "
                     f"of shape {list(shape)}")


def _from_npy(path: Path, specs: list[TensorSpec]) -> list[dict[str, np.ndarray]]:
    import numpy as np
    if len(specs) != 1:
        raise UsageError(f"{path}: the model has {len(specs)} inputs; give .npz files keyed by input name")
    arr = _array(lambda: np.load(path, allow_pickle=False), path)
    return [{specs[0].name: a} for a in _batched(arr, specs[0], path)]


def _from_npz(path: Path, specs: list[TensorSpec]) -> list[dict[str, np.ndarray]]:
    import numpy as np
    try:
        with zipfile.ZipFile(path) as archive:
            check_archive(path, archive.infolist())
    except (zipfile.BadZipFile, OSError) as e:
        raise UsageError(f"{path}: not a readable .npz ({e})") from None
    with np.load(path, allow_pickle=False) as z:
        missing = [s.name for s in specs if s.name not in z.files]
        if missing:
            raise UsageError(f"{path}: no array for input(s) {', '.join(missing)} (it has {', '.join(z.files)})")
        per_input = {s.name: _batched(_array(lambda n=s.name: z[n], path), s, path) for s in specs}
    counts = {len(v) for v in per_input.values()}
    if len(counts) != 1:
        raise UsageError(f"{path}: inputs have different sample counts")
    return [{name: per_input[name][i] for name in per_input} for i in range(counts.pop())]


def _from_image(path: Path, specs: list[TensorSpec], channel_last: bool, opts: CalibrationOptions) -> dict:
    import numpy as np
    images = [s for s in specs if len(s.shape) == 4]
    if len(specs) != 1 or not images:
        raise UsageError(f"{path}: images calibrate single-input image models only; give .npz files")
    spec = images[0]
    h, w, c = (spec.shape[1:4] if channel_last else (spec.shape[2], spec.shape[3], spec.shape[1]))
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("L" if c == 1 else "RGB").resize(opts.resize[::-1] if opts.resize else (w, h))
            arr = np.asarray(im, dtype=np.float32) / 255.0
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise UsageError(f"{path}: not a readable image ({one_line(str(e))[:200]})") from None
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[:2] != (h, w):
        raise UsageError(f"{path}: --resize gives {arr.shape[:2]} but input {spec.name} takes {h}x{w}")
    mean = np.asarray(opts.mean or (0.0,), dtype=np.float32)
    std = np.asarray(opts.std or (1.0,), dtype=np.float32)
    arr = (arr - mean) / std
    arr = arr if channel_last else arr.transpose(2, 0, 1)
    return {spec.name: arr[None].astype(spec.dtype)}
