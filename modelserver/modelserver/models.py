"""The classifiers the server can run, behind one small interface.

The HTTP layer and the batcher see only `Classifier`: preprocess one image (in request
threads), predict a stacked batch (in the batcher's thread), and the labels.
"""

from __future__ import annotations

import json
import logging
import os
from abc import ABC, abstractmethod
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter as TFLiteInterpreter
from ai_edge_litert.interpreter import OpResolverType
from PIL import Image

from .config import Settings
from .images import load_rgb
from .weights import file_digest, resolve_weights

log = logging.getLogger(__name__)

# Keras' "caffe" preprocessing for ResNet50: BGR order, ImageNet channel means subtracted.
_CAFFE_BGR_MEANS = np.array([103.939, 116.779, 123.68], dtype=np.float32)


class ModelLoadError(RuntimeError):
    """The model or its labels cannot be loaded; the message names the setting to fix."""


class Classifier(ABC):
    """An image classifier: what the server needs to know of a model, and no more."""

    def __init__(self, name: str, labels: tuple[str, ...], source: Path) -> None:
        self.name = name
        self.labels = labels
        self.source = source
        self.sha256 = file_digest(source, "sha256")

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
        }


class ResNet50Classifier(Classifier):
    """Keras' ImageNet ResNet50 with its own (caffe) preprocessing and a compiled forward pass."""

    def __init__(self, weights: Path) -> None:
        super().__init__("resnet50", imagenet_labels(), weights)
        model = tf.keras.applications.ResNet50(weights=None)
        try:
            model.load_weights(str(weights))
        except Exception as error:
            raise ModelLoadError(
                f"MODEL_WEIGHTS={weights} is not a ResNet50 ImageNet weights file: {error}"
            ) from None
        self._forward = compiled_forward(model, (224, 224))

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

    def __init__(self, path: Path, labels: tuple[str, ...] | None) -> None:
        try:
            model = tf.keras.models.load_model(path, compile=False)
        except Exception as error:
            raise ModelLoadError(f"MODEL_FILE={path} cannot be loaded: {error}") from None
        _, height, width, channels = model.input_shape
        if channels != 3 or not height or not width:
            raise ModelLoadError(f"MODEL_FILE={path} takes {model.input_shape}, not RGB images")
        self._size = (int(width), int(height))
        outputs = int(model.output_shape[-1])
        super().__init__(path.stem, _labels_for(outputs, labels, path), path)
        self._forward = compiled_forward(model, (int(height), int(width)))
        self._ends_in_softmax = keras_ends_in_softmax(model)

    @property
    def input_size(self) -> tuple[int, int]:
        return self._size

    def to_input(self, image: Image.Image) -> np.ndarray:
        return np.asarray(image, dtype=np.float32)

    def predict_batch(self, batch: np.ndarray) -> np.ndarray:
        outputs = np.asarray(self._forward(tf.constant(batch, tf.float32)))
        return as_probabilities(outputs, already=self._ends_in_softmax)


class TFLiteClassifier(Classifier):
    """A `.tflite` classifier; quantized inputs take raw uint8/int8 pixels, float inputs
    take pixels scaled to [-1, 1] (the MobileNet / EfficientNet-Lite convention)."""

    def __init__(self, path: Path, labels: tuple[str, ...] | None, threads: int) -> None:
        try:
            self._interpreter = TFLiteInterpreter(model_path=str(path), num_threads=threads)
        except Exception as error:
            raise ModelLoadError(f"MODEL_FILE={path} is not a TFLite model: {error}") from None
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        _, height, width, channels = self._input["shape"]
        if channels != 3:
            raise ModelLoadError(f"MODEL_FILE={path} takes {self._input['shape']}, not RGB")
        self._size = (int(width), int(height))
        self._interpreter.allocate_tensors()
        outputs = int(self._output["shape"][-1])
        super().__init__(path.stem, _labels_for(outputs, labels, path), path)
        self._outputs_probabilities = tflite_outputs_probabilities(path, self._output)

    @property
    def input_size(self) -> tuple[int, int]:
        return self._size

    def to_input(self, image: Image.Image) -> np.ndarray:
        pixels = np.asarray(image, dtype=np.uint8)
        dtype = self._input["dtype"]
        if dtype == np.uint8:
            return pixels
        if dtype == np.int8:
            return (pixels.astype(np.int16) - 128).astype(np.int8)
        return pixels.astype(np.float32) / 127.5 - 1.0

    def predict_batch(self, batch: np.ndarray) -> np.ndarray:
        """One invoke per image: TFLite models are built for batch 1, and XNNPack cannot
        resize many quantized graphs."""
        return np.concatenate([self._invoke(image[np.newaxis]) for image in batch])

    def _invoke(self, single: np.ndarray) -> np.ndarray:
        self._interpreter.set_tensor(self._input["index"], single)
        self._interpreter.invoke()
        raw = self._interpreter.get_tensor(self._output["index"])
        scale, zero_point = self._output["quantization"]
        if scale:
            raw = (raw.astype(np.float32) - zero_point) * scale
        return as_probabilities(raw.astype(np.float32), already=self._outputs_probabilities)


def compiled_forward(model: Any, height_width: tuple[int, int]) -> Any:
    """The inference pass as one traced graph for any batch size: no retracing per batch."""
    height, width = height_width
    return tf.function(
        lambda batch: model(batch, training=False),
        input_signature=[tf.TensorSpec([None, height, width, 3], tf.float32)],
    )


def write_seeded_resnet50_weights(path: Path, seed: int) -> None:
    """A randomly initialised ResNet50 in the official weights layout (Keras' legacy HDF5):
    for tests and benchmarks where the official file cannot be had. Speed and shapes are
    those of the real model; the answers are not."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    tf.keras.utils.set_random_seed(seed)
    model = tf.keras.applications.ResNet50(weights=None)
    with h5py.File(path, "w") as weights_file:
        legacy_h5_format.save_weights_to_hdf5_group(weights_file, model)


def load_classifier(settings: Settings) -> Classifier:
    """The classifier the settings name, with TensorFlow's threads fitted to the CPUs."""
    threads = max(1, available_cpus() // settings.workers)
    configure_tensorflow_threads(threads)
    model_file = settings.model_file
    if model_file is None:
        return ResNet50Classifier(resolve_weights(settings.weights))
    if not model_file.is_file():
        raise ModelLoadError(f"MODEL_FILE={model_file}: no such file")
    labels = load_labels(settings.labels_file) if settings.labels_file else None
    if model_file.suffix == ".tflite":
        return TFLiteClassifier(model_file, labels, threads)
    if model_file.suffix == ".keras":
        return KerasFileClassifier(model_file, labels)
    raise ModelLoadError(f"MODEL_FILE={model_file}: expected a .keras or .tflite file")


def caffe_preprocess(pixels: np.ndarray) -> np.ndarray:
    """What `keras.applications.resnet50.preprocess_input` does, without TensorFlow ops."""
    return pixels[..., ::-1] - _CAFFE_BGR_MEANS


def keras_ends_in_softmax(model: Any) -> bool:
    """Whether a Keras model's last layer is a softmax (a `Softmax` layer or activation)."""
    last = model.layers[-1]
    activation = getattr(last, "activation", None)
    return isinstance(last, tf.keras.layers.Softmax) or (
        getattr(activation, "__name__", None) == "softmax"
    )


def tflite_outputs_probabilities(path: Path, output: dict[str, Any]) -> bool:
    """Whether a TFLite model's output already is a distribution: its last op is a softmax,
    or it is quantized to a range within [0, 1] (how quantized classifiers store softmax).

    Read from an interpreter without delegates: XNNPack hides the ops it takes over."""
    scale, zero_point = output["quantization"]
    if scale:
        low, high = np.iinfo(output["dtype"]).min, np.iinfo(output["dtype"]).max
        if (low - zero_point) * scale >= 0 and (high - zero_point) * scale <= 1 + 1e-6:
            return True
    plain = TFLiteInterpreter(
        model_path=str(path),
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    return any(
        output["index"] in op["outputs"] and op["op_name"] == "SOFTMAX"
        for op in plain._get_ops_details()
    )


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


def _labels_for(outputs: int, labels: tuple[str, ...] | None, path: Path) -> tuple[str, ...]:
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


def available_cpus() -> int:
    """CPUs this container may use: the cgroup quota and the affinity mask, whichever is less."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return cpus


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
