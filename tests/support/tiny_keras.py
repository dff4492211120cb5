"""A seeded 3-way Keras classifier, small enough to make in a test: users' own .keras files."""

from __future__ import annotations

from pathlib import Path

import keras

LABELS = ("cat", "dog", "hotdog")


def tiny_classifier(path: Path, activation: str | None) -> keras.Model:
    """Saved at `path`; it keeps its preprocessing inside, as users should."""
    keras.utils.set_random_seed(5)
    model = keras.Sequential(
        [
            keras.Input((32, 48, 3)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(len(LABELS), activation=activation),
        ]
    )
    model.save(path)
    return model
