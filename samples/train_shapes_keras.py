"""Train the Keras twin of the sample CNN on the procedural shapes and save `shapes_keras.keras`.

    python samples/train_shapes_keras.py     # about a minute on 2 CPU cores

Deterministic (seeded); the saved file is committed so tests and users need no training run.
Quantized parity is only meaningful on trained weights, which is why the sample is trained.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from shapes import CLASSES, make_batch  # noqa: E402


def build():
    import keras

    inputs = keras.Input((64, 64, 3), name="image")
    h = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(inputs)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(h)
    h = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(h)
    h = keras.layers.Conv2D(48, 1, activation="relu")(h)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = keras.layers.Dense(len(CLASSES), name="logits")(h)
    return keras.Model(inputs, outputs, name="shapes_keras")


def main() -> None:
    import keras

    keras.utils.set_random_seed(0)
    x, y = make_batch(4096, seed=11)
    model = build()
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x.transpose(0, 2, 3, 1), y, batch_size=64, epochs=10, verbose=2)
    xt, yt = make_batch(512, seed=12)
    accuracy = float(np.mean(model.predict(xt.transpose(0, 2, 3, 1), verbose=0).argmax(1) == yt))
    print(f"held-out accuracy: {accuracy:.3f}")
    shipped = build()  # without the optimizer's state: a third of the size
    shipped.set_weights(model.get_weights())
    shipped.save(HERE / "shapes_keras.keras")


if __name__ == "__main__":
    main()
