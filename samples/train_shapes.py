"""Train the sample CNN on generated shapes and write its weights and calibration images.

    python samples/train_shapes.py

Deterministic on CPU (fixed seeds, a fixed image pool) and well under two minutes on two cores.
Writes `shapes_cnn.pt` (a state dict, read with `torch.load(weights_only=True)`) and
`calibration/*.png`: 16 images drawn from a seed the training pool never used, for
`bridge convert ... --calibration samples/calibration`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn

from shapes import CLASSES, make_batch, to_uint8_hwc
from shapes_cnn import WEIGHTS, ShapesCNN

TRAIN_SEED, EVAL_SEED, CALIBRATION_SEED = 1, 2, 3  # disjoint image sets; EXAMPLE_SEED is 7


def train(steps: int, batch: int, pool: int, seed: int) -> tuple[ShapesCNN, float]:
    torch.manual_seed(seed)
    images, labels = make_batch(pool, TRAIN_SEED)
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(labels)
    model = ShapesCNN()
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-3, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=4e-3, total_steps=steps, pct_start=0.15)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    order = torch.randperm(pool)
    model.train()
    for step in range(steps):
        start = (step * batch) % pool
        if start + batch > pool:
            order, start = torch.randperm(pool), 0
        idx = order[start:start + batch]
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
    return model.eval(), loss.item()


@torch.no_grad()
def accuracy(model: nn.Module, n: int) -> float:
    images, labels = make_batch(n, EVAL_SEED)
    predictions = model(torch.from_numpy(images)).argmax(1).numpy()
    return float((predictions == labels).mean())


def write_calibration(folder: Path, n: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    images, labels = make_batch(n, CALIBRATION_SEED)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        Image.fromarray(to_uint8_hwc(image)).save(folder / f"{i:02d}_{CLASSES[label]}.png", optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--pool", type=int, default=6144, help="generated training images, reused across epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval", type=int, default=1000, help="held-out images for the accuracy figure")
    parser.add_argument("--calibration", type=int, default=16)
    args = parser.parse_args()

    started = time.perf_counter()
    model, _ = train(args.steps, args.batch, args.pool, args.seed)
    trained = time.perf_counter() - started
    acc = accuracy(model, args.eval)
    print(f"held-out accuracy {acc:.1%} on {args.eval} images ({len(CLASSES)} classes); "
          f"trained in {trained:.1f} s")
    torch.save(model.state_dict(), WEIGHTS)
    write_calibration(WEIGHTS.with_name("calibration"), args.calibration)
    print(f"wrote {WEIGHTS} ({WEIGHTS.stat().st_size / 1024:.0f} KiB) and {args.calibration} calibration images")


if __name__ == "__main__":
    main()
