"""The model files the server takes, in one table: which backend module runs each format.

Imports nothing but the standard library: `config` reads it in gunicorn's master."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

BACKENDS = ("tensorflow", "openvino")
PRECISIONS = ("fp32", "bf16", "int8")


@dataclass(frozen=True)
class ModelFormat:
    """A kind of model source; `modules` maps a backend to the module (in this package)
    that loads it; `companions` are suffixes of files that must lie beside it."""

    what: str
    modules: Mapping[str, str]
    companions: tuple[str, ...] = ()


RESNET50 = ModelFormat("the built-in ResNet50", {"tensorflow": "keras", "openvino": "openvino"})
FORMATS: Mapping[str, ModelFormat] = {
    ".keras": ModelFormat("a .keras model", {"tensorflow": "keras", "openvino": "openvino"}),
    ".tflite": ModelFormat("a .tflite model", {"tensorflow": "litert", "openvino": "openvino"}),
    ".xml": ModelFormat("an OpenVINO IR", {"openvino": "openvino"}, (".bin",)),
}
MODEL_SUFFIXES = tuple(FORMATS)
# The package each backend module needs, as `pip` and `import` know it.
RUNTIMES = {"keras": "tensorflow", "litert": "ai_edge_litert", "openvino": "openvino"}


def format_of(model_file: Path | None) -> ModelFormat:
    """The format of MODEL_FILE (None: the built-in ResNet50), or why it has none."""
    if model_file is None:
        return RESNET50
    try:
        return FORMATS[model_file.suffix]
    except KeyError:
        raise ValueError(
            f"MODEL_FILE={model_file}: expected a {', '.join(MODEL_SUFFIXES)} file"
        ) from None


def source_files(model_file: Path) -> tuple[Path, ...]:
    """The files a model file stands for: itself and its companions (an IR's .bin)."""
    companions = format_of(model_file).companions
    return (model_file, *(model_file.with_suffix(suffix) for suffix in companions))
