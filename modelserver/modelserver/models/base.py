"""The classifier interface and what every backend shares: where a model came from, how it
runs, its input checks and input conventions, and turning outputs into probabilities."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..images import load_rgb
from . import cpu

# Keras' "caffe" preprocessing for ResNet50: BGR order, ImageNet channel means subtracted.
CAFFE_BGR_MEANS = (103.939, 116.779, 123.68)
_CAFFE_BGR_MEANS = np.array(CAFFE_BGR_MEANS, dtype=np.float32)


class ModelLoadError(RuntimeError):
    """The model or its labels cannot be loaded; the message names the setting to fix."""


@dataclass(frozen=True)
class Runtime:
    """How a loaded model runs, as compiled: shown by `/v1/models/<name>`,
    `modelserver_model_info` and the start-up log.

    `float_precision` is the arithmetic of the model's float operations, as the backend
    compiled them (read back, never what was asked); `quantized` says the model itself carries
    INT8 operations (a quantized TFLite file or IR). `precision` sums both up: `int8` for a
    quantized model, whatever its float parts run in, else the float precision."""

    backend: str
    device: str
    threads: int
    float_precision: str
    quantized: bool = False

    @property
    def precision(self) -> str:
        return "int8" if self.quantized else self.float_precision

    def describe(self) -> dict[str, Any]:
        return {**asdict(self), "precision": self.precision}


class Classifier(ABC):
    """An image classifier: what the server needs to know of a model, and no more.

    `files` is the model's source (weights, a model file, or an IR's .xml and .bin);
    its sha256 is the file's, or for several files that of their concatenation."""

    def __init__(
        self, name: str, labels: tuple[str, ...], files: tuple[Path, ...], runtime: Runtime
    ) -> None:
        self.name = name
        self.labels = labels
        self.source = files[0]
        self.sha256 = files_digest(files)
        self.runtime = runtime

    @property
    @abstractmethod
    def input_size(self) -> tuple[int, int]:
        """(width, height) the model takes."""

    @abstractmethod
    def to_input(self, image: Image.Image) -> np.ndarray:
        """One RGB image of `input_size` as the model's input array (height, width, 3)."""

    @abstractmethod
    def predict_batch(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities, shape (len(batch), len(labels)), for a stack of `to_input` arrays."""

    def preprocess(self, data: bytes, max_pixels: int) -> np.ndarray:
        """Upload bytes to a model input; raises `images.ImageError` for a bad upload."""
        return self.to_input(load_rgb(data, self.input_size, max_pixels))

    def warm_up(self, batch_sizes: tuple[int, ...]) -> None:
        """Run the batch sizes the server will use once, so no request pays for tracing."""
        width, height = self.input_size
        blank = self.to_input(Image.new("RGB", (width, height)))
        for size in batch_sizes:
            self.predict_batch(np.stack([blank] * size))

    def describe(self) -> dict[str, Any]:
        width, height = self.input_size
        return {
            "name": self.name,
            "input_shape": [height, width, 3],
            "labels": len(self.labels),
            "source": str(self.source),
            "sha256": self.sha256,
            **self.runtime.describe(),
            "cpu": cpu.capabilities(),
        }


def files_digest(files: tuple[Path, ...]) -> str:
    """sha256 of one file, or of several files' bytes one after the other."""
    digest = hashlib.sha256()
    for path in files:
        with path.open("rb") as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def rgb_input_size(shape: Any, path: Path) -> tuple[int, int]:
    """(width, height) of a model input shaped (batch, height, width, 3), else why not."""
    dims = [int(d) if d is not None and int(d) > 0 else None for d in shape]
    if len(dims) != 4 or dims[3] != 3 or not dims[1] or not dims[2]:
        raise ModelLoadError(f"MODEL_FILE={path} takes {list(shape)}, not RGB images")
    return (int(dims[2]), int(dims[1]))


def caffe_preprocess(pixels: np.ndarray) -> np.ndarray:
    """What `keras.applications.resnet50.preprocess_input` does, without TensorFlow ops."""
    result: np.ndarray = pixels[..., ::-1] - _CAFFE_BGR_MEANS
    return result


def tflite_input(image: Image.Image, dtype: Any) -> np.ndarray:
    """A TFLite classifier's input: quantized inputs take raw uint8/int8 pixels, float inputs
    take pixels scaled to [-1, 1] (the MobileNet / EfficientNet-Lite convention)."""
    pixels = np.asarray(image, dtype=np.uint8)
    if dtype == np.uint8:
        return pixels
    if dtype == np.int8:
        return (pixels.astype(np.int16) - 128).astype(np.int8)
    return pixels.astype(np.float32) / 127.5 - 1.0


def quantized_to_unit_range(dtype: Any, scale: float, zero_point: float) -> bool:
    """Whether an integer output dequantizes into [0, 1]: how quantized classifiers store
    a softmax's probabilities."""
    low, high = np.iinfo(dtype).min, np.iinfo(dtype).max
    return bool((low - zero_point) * scale >= 0 and (high - zero_point) * scale <= 1 + 1e-6)


def as_probabilities(outputs: np.ndarray, *, already: bool) -> np.ndarray:
    """The model's outputs as probabilities: logits get a softmax; a model that ends in a
    softmax is only renormalized (quantization leaves its rows summing to 0.95 or so, and a
    second softmax would flatten them to near-uniform)."""
    if already:
        clipped = np.clip(outputs, 0.0, None)
        sums = clipped.sum(axis=-1, keepdims=True)
        renormalized: np.ndarray = clipped / np.where(sums > 0, sums, 1.0)
        return renormalized
    shifted = np.exp(outputs - outputs.max(axis=-1, keepdims=True))
    probabilities: np.ndarray = shifted / shifted.sum(axis=-1, keepdims=True)
    return probabilities
