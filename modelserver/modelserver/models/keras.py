"""The TensorFlow backend: ResNet50 from a weights file and `.keras` models, run by
TensorFlow (the backend for NVIDIA GPUs). The only module that imports TensorFlow; the
OpenVINO backend borrows its Keras loaders to convert a model."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf
from PIL import Image

from ..weights import resolve_weights
from .base import (
    Classifier,
    ModelLoadError,
    Runtime,
    as_probabilities,
    caffe_preprocess,
    rgb_input_size,
)
from .labels import imagenet_labels, labels_for
from .registry import choose_precision

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger(__name__)


def load(settings: Settings, labels: tuple[str, ...] | None, threads: int) -> Classifier:
    """The built-in ResNet50 or a `.keras` file, with TensorFlow's threads fitted to the CPUs."""
    configure_tensorflow_threads(threads)
    choose_precision(settings.precision, "tensorflow", quantized=False)  # refuses bf16, int8
    runtime = Runtime(
        backend="tensorflow",
        device="GPU" if tf.config.list_physical_devices("GPU") else "CPU",
        threads=threads,
        float_precision="fp32",
    )
    if settings.model_file is None:
        return ResNet50Classifier(resolve_weights(settings.weights), runtime)
    return KerasFileClassifier(settings.model_file, labels, runtime)


class ResNet50Classifier(Classifier):
    """Keras' ImageNet ResNet50 with its own (caffe) preprocessing and a compiled forward pass."""

    def __init__(self, weights: Path, runtime: Runtime) -> None:
        super().__init__("resnet50", imagenet_labels(), (weights,), runtime)
        self._forward = compiled_forward(resnet50_model(weights), (224, 224))

    @property
    def input_size(self) -> tuple[int, int]:
        return (224, 224)

    def to_input(self, image: Image.Image) -> np.ndarray:
        return caffe_preprocess(np.asarray(image, dtype=np.float32))

    def predict_batch(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self._forward(tf.constant(batch, tf.float32)))


class KerasFileClassifier(Classifier):
    """A saved `.keras` classifier. It takes RGB pixels in [0, 255]: its own preprocessing
    (a Rescaling layer, say) belongs inside the model, as Keras recommends."""

    def __init__(self, path: Path, labels: tuple[str, ...] | None, runtime: Runtime) -> None:
        model = load_keras_model(path)
        self._size = rgb_input_size(model.input_shape, path)
        outputs = int(model.output_shape[-1])
        super().__init__(path.stem, labels_for(outputs, labels, path), (path,), runtime)
        self._forward = compiled_forward(model, (self._size[1], self._size[0]))
        self._ends_in_softmax = keras_ends_in_softmax(model)

    @property
    def input_size(self) -> tuple[int, int]:
        return self._size

    def to_input(self, image: Image.Image) -> np.ndarray:
        return np.asarray(image, dtype=np.float32)

    def predict_batch(self, batch: np.ndarray) -> np.ndarray:
        outputs = np.asarray(self._forward(tf.constant(batch, tf.float32)))
        return as_probabilities(outputs, already=self._ends_in_softmax)


def resnet50_model(weights: Path) -> Any:
    """Keras' ResNet50 with the weights of a file in the official layout."""
    model = tf.keras.applications.ResNet50(weights=None)
    try:
        model.load_weights(str(weights))
    except Exception as error:
        raise ModelLoadError(
            f"MODEL_WEIGHTS={weights} is not a ResNet50 ImageNet weights file: {error}"
        ) from None
    return model


def load_keras_model(path: Path) -> Any:
    try:
        return tf.keras.models.load_model(path, compile=False)
    except Exception as error:
        raise ModelLoadError(f"MODEL_FILE={path} cannot be loaded: {error}") from None


def keras_ends_in_softmax(model: Any) -> bool:
    """Whether a Keras model's last layer is a softmax (a `Softmax` layer or activation)."""
    last = model.layers[-1]
    activation = getattr(last, "activation", None)
    return isinstance(last, tf.keras.layers.Softmax) or (
        getattr(activation, "__name__", None) == "softmax"
    )


def compiled_forward(model: Any, height_width: tuple[int, int]) -> Any:
    """The inference pass as one traced graph for any batch size: no retracing per batch."""
    height, width = height_width
    return tf.function(
        lambda batch: model(batch, training=False),
        input_signature=[tf.TensorSpec([None, height, width, 3], tf.float32)],
    )


def configure_tensorflow_threads(threads: int) -> None:
    """Fit TensorFlow's pools to our CPU share; allowed only before TensorFlow starts up.

    One op at a time, each on all our cores: a classifier's graph is mostly a chain, so
    running independent ops side by side only oversubscribes the cores (measured on ResNet50
    at 2 cores: 14% more images/s at batch 1, 30% at batch 4)."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        log.debug("TensorFlow already started; keeping its thread pools")
