"""Train the sample CNN on generated shapes and write its weights and calibration images.

    python samples/train_shapes.py

Deterministic on CPU (fixed seeds, a fixed image pool, one thread); about a minute. Writes
`shapes_cnn.pt` (a state dict, read with `torch.load(weights_only=True)`) and `calibration/*.png`:
24 images, three per class, from a seed the training pool never used, for
`bridge convert ... --calibration samples/calibration`. Why 24: bridge holds the last few files out
for parity, and full-integer TFLite calibrates by min/max, so 8 calibration images under-estimate
the logits' range and clip them (about 20 dB SNR); 16 or more give about 30 dB.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from shapes import CLASSES, make_batch, to_uint8_hwc
from shapes_cnn import WEIGHTS, ShapesCNN
from torch import nn

TRAIN_SEED, EVAL_SEED, CALIBRATION_SEED = 1, 2, 3  # disjoint image sets; EXAMPLE_SEED is 7
LABEL_SMOOTHING = 0.05


def train(steps: int, batch: int, pool: int, seed: int, lr: float = 1e-2) -> ShapesCNN:
    # One thread: the result does not depend on the core count, and on a busy two-core machine
    # it is also faster than two threads fighting other processes.
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    images, labels = make_batch(pool, TRAIN_SEED)
    x_all = torch.from_numpy(images).contiguous(memory_format=torch.channels_last)
    y_all = torch.from_numpy(labels)
    # channels_last runs this network's convolutions about 1.7x faster on CPU.
    model = ShapesCNN().to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.15)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)
    position = pool  # past the end: the first step shuffles
    model.train()
    for step in range(steps):
        if position + batch > pool:  # a new epoch in a new order
            order, position = torch.randperm(pool), 0
        idx = order[position:position + batch]
        position += batch
        x, y = x_all[idx], y_all[idx]
        flip = torch.rand(len(x)) < 0.5  # mirror images are still the same shapes
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if (step + 1) % 100 == 0:
            print(f"step {step + 1:4d}/{steps}  loss {loss.item():.3f}", flush=True)
    return model.to(memory_format=torch.contiguous_format).eval()


@torch.no_grad()
def accuracy(model: nn.Module, n: int) -> float:
    images, labels = make_batch(n, EVAL_SEED)
    predictions = model(torch.from_numpy(images)).argmax(1).numpy()
    return float((predictions == labels).mean())


def write_calibration(folder: Path, n: int) -> None:
    """`n` PNGs cycling through the classes, so that both the calibration part and the part bridge
    holds out for parity (the last files in name order) show every shape."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    images, labels = make_batch(8 * n, CALIBRATION_SEED)
    taken = [0] * len(CLASSES)
    for i in range(n):
        wanted = i % len(CLASSES)
        index = [j for j, label in enumerate(labels) if label == wanted][taken[wanted]]
        taken[wanted] += 1
        image = Image.fromarray(to_uint8_hwc(images[index]))
        image.save(folder / f"{i:02d}_{CLASSES[wanted]}.png", optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--pool", type=int, default=6144, help="generated training images, reused across epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval", type=int, default=1000, help="held-out images for the accuracy figure")
    parser.add_argument("--calibration", type=int, default=24)
    args = parser.parse_args()

    started = time.perf_counter()
    model = train(args.steps, args.batch, args.pool, args.seed)
    trained = time.perf_counter() - started
    acc = accuracy(model, args.eval)
    print(f"held-out accuracy {acc:.1%} on {args.eval} images ({len(CLASSES)} classes); "
          f"trained in {trained:.1f} s")
    torch.save(model.state_dict(), WEIGHTS)
    write_calibration(WEIGHTS.with_name("calibration"), args.calibration)
    print(f"wrote {WEIGHTS} ({WEIGHTS.stat().st_size / 1024:.0f} KiB) and {args.calibration} calibration images")


if __name__ == "__main__":
    main()
