"""Procedural shape images: a dataset made on the spot, so the sample needs no download.

Each image is one filled shape (a class of `CLASSES`) in a random colour, size, position and
rotation over a noisy gradient background. Everything comes from `numpy.random.default_rng(seed)`:
the same `(n, seed)` always gives the same bytes, which keeps training, calibration and the
held-out parity images reproducible and disjoint (they use different seeds).
"""

from __future__ import annotations

import numpy as np

SIZE = 64
CLASSES = ("circle", "square", "triangle", "plus", "ring", "star", "frame", "diamond")

_SUPERSAMPLE = 2  # edges are anti-aliased by averaging 2x2 sub-pixel samples
_GRID = (np.arange(SIZE * _SUPERSAMPLE, dtype=np.float32) + 0.5) / _SUPERSAMPLE


def _star(points: int, inner: float) -> np.ndarray:
    angles = np.pi / 2 + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


_TRIANGLE = _star(3, 0.5)[::2]  # vertices at 90, 210 and 330 degrees on the unit circle
_STAR = _star(5, 0.42)


def _in_polygon(u: np.ndarray, v: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd rule: a point is inside when a ray from it crosses the outline an odd number of times."""
    inside = np.zeros(u.shape, dtype=bool)
    for (x1, y1), (x2, y2) in zip(poly, np.roll(poly, -1, axis=0), strict=True):
        crosses = (y1 > v) != (y2 > v)
        x_cross = (x2 - x1) * (v - y1) / (y2 - y1 + 1e-12) + x1
        inside ^= crosses & (u < x_cross)
    return inside


def _mask(label: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Shape `label` in unit coordinates: the shape spans roughly [-1, 1] on both axes."""
    name = CLASSES[label]
    r2 = u * u + v * v
    box = np.maximum(np.abs(u), np.abs(v))
    if name == "circle":
        return r2 <= 0.9**2
    if name == "ring":
        return (r2 <= 1.0) & (r2 >= 0.55**2)
    if name == "square":
        return box <= 0.8
    if name == "frame":
        return (box <= 0.88) & (box >= 0.5)
    if name == "diamond":
        return np.abs(u) + np.abs(v) <= 1.05
    if name == "plus":
        return ((np.abs(u) <= 0.28) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= 0.28) & (np.abs(u) <= 1.0))
    if name == "triangle":
        return _in_polygon(u, v, _TRIANGLE)
    if name == "star":
        return _in_polygon(u, v, _STAR)
    raise ValueError(f"unknown shape {name}")


def _rotation(label: int, rng: np.random.Generator) -> float:
    """Square, frame, plus and diamond turn only a little so a square never becomes a diamond."""
    if CLASSES[label] in ("triangle", "star"):
        return rng.uniform(0.0, 2 * np.pi)
    return np.deg2rad(rng.uniform(-12.0, 12.0))


def _colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A background colour and a shape colour at least 0.45 apart (Euclidean, RGB in [0, 1])."""
    background = rng.uniform(0.0, 1.0, 3)
    for _ in range(100):
        colour = rng.uniform(0.0, 1.0, 3)
        if np.linalg.norm(colour - background) >= 0.45:
            break
    return background.astype(np.float32), colour.astype(np.float32)


def render(label: int, rng: np.random.Generator) -> np.ndarray:
    """One float32 image [3, SIZE, SIZE] in [0, 1] showing shape `label`."""
    radius = np.float32(rng.uniform(9.0, 22.0))
    cx, cy = rng.uniform(radius + 1.0, SIZE - radius - 1.0, 2).astype(np.float32)
    theta = _rotation(label, rng)
    cos, sin = np.float32(np.cos(theta)), np.float32(np.sin(theta))
    dx = (_GRID[None, :] - cx) / radius
    dy = (cy - _GRID[:, None]) / radius  # y grows upwards so "upright" means upright on screen
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy
    fine = _mask(label, u, v).astype(np.float32)
    coverage = fine.reshape(SIZE, _SUPERSAMPLE, SIZE, _SUPERSAMPLE).mean(axis=(1, 3))

    background, colour = _colours(rng)
    angle = rng.uniform(0.0, 2 * np.pi)
    steps = np.arange(SIZE, dtype=np.float32) / SIZE
    ramp = np.float32(np.cos(angle)) * steps[None, :] + np.float32(np.sin(angle)) * steps[:, None]
    gradient = np.float32(rng.uniform(0.0, 0.25)) * (ramp - ramp.mean())
    image = background[:, None, None] + gradient[None]
    image = image * (1.0 - coverage) + colour[:, None, None] * coverage
    image += np.float32(rng.uniform(0.01, 0.06)) * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(image, 0.0, 1.0, out=image)


def make_batch(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` images (float32 [n, 3, 64, 64] in [0, 1]) and their labels (int64 [n]) from `seed`."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASSES), n).astype(np.int64)
    images = np.stack([render(int(label), rng) for label in labels]) if n else np.zeros((0, 3, SIZE, SIZE))
    return images.astype(np.float32), labels


def to_uint8_hwc(image: np.ndarray) -> np.ndarray:
    """[3, H, W] float in [0, 1] to the [H, W, 3] uint8 layout image files use."""
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8).transpose(1, 2, 0)
