"""Class labels: ImageNet's (shipped in the package) or a file given with the model."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from .base import ModelLoadError


def imagenet_labels() -> tuple[str, ...]:
    """Keras' 1000 ImageNet class names, shipped in the package: decoding needs no network."""
    index = resources.files("modelserver").joinpath("data/imagenet_class_index.json")
    return _labels_from_class_index(json.loads(index.read_text()))


def load_labels(path: Path) -> tuple[str, ...]:
    """Labels from a Keras class-index `.json` or a text file with one label a line."""
    try:
        text = path.read_text()
        if path.suffix == ".json":
            return _labels_from_class_index(json.loads(text))
    except (OSError, ValueError, KeyError, IndexError) as error:
        raise ModelLoadError(f"MODEL_LABELS={path} cannot be read: {error}") from None
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def _labels_from_class_index(index: dict[str, list[str]]) -> tuple[str, ...]:
    return tuple(index[str(i)][1] for i in range(len(index)))


def labels_for(outputs: int, labels: tuple[str, ...] | None, path: Path) -> tuple[str, ...]:
    """The given labels, or ImageNet's for a 1000-way model; their count must fit the model."""
    if labels is None:
        if outputs != 1000:
            raise ModelLoadError(f"MODEL_FILE={path} has {outputs} outputs: set MODEL_LABELS")
        labels = imagenet_labels()
    if len(labels) != outputs:
        raise ModelLoadError(
            f"MODEL_LABELS has {len(labels)} labels but MODEL_FILE={path} has {outputs} outputs"
        )
    return labels
