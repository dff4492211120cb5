"""The LiteRT backend: `.tflite` classifiers with the TensorFlow backend. The only module
that imports LiteRT."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from PIL import Image

from .base import (
    Classifier,
    ModelLoadError,
    Runtime,
    as_probabilities,
    quantized_to_unit_range,
    rgb_input_size,
    tflite_input,
)
from .labels import labels_for
from .registry import choose_precision

if TYPE_CHECKING:
    from ..config import Settings


def load(settings: Settings, labels: tuple[str, ...] | None, threads: int) -> Classifier:
    assert settings.model_file is not None  # the registry sends only .tflite files here
    return TFLiteClassifier(settings.model_file, labels, threads, settings.precision)


class TFLiteClassifier(Classifier):
    """A `.tflite` classifier, run one image at a time by LiteRT's interpreter."""

    def __init__(
        self, path: Path, labels: tuple[str, ...] | None, threads: int, precision: str
    ) -> None:
        try:
            self._interpreter = Interpreter(model_path=str(path), num_threads=threads)
        except Exception as error:
            raise ModelLoadError(f"MODEL_FILE={path} is not a TFLite model: {error}") from None
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        self._size = rgb_input_size(self._input["shape"], path)
        self._interpreter.allocate_tensors()
        outputs = int(self._output["shape"][-1])
        quantized = self._input["dtype"] in (np.uint8, np.int8)
        choose_precision(precision, "tensorflow", quantized)  # refuses what LiteRT cannot run
        runtime = Runtime(
            backend="tensorflow",
            device="CPU",
            threads=threads,
            float_precision="fp32",
            quantized=quantized,
        )
        super().__init__(path.stem, labels_for(outputs, labels, path), (path,), runtime)
        self._outputs_probabilities = tflite_outputs_probabilities(path, self._output)

    @property
    def input_size(self) -> tuple[int, int]:
        return self._size

    def to_input(self, image: Image.Image) -> np.ndarray:
        return tflite_input(image, self._input["dtype"])

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


def tflite_outputs_probabilities(path: Path, output: dict[str, Any]) -> bool:
    """Whether a TFLite model's output already is a distribution: its last op is a softmax,
    or it is quantized to a range within [0, 1] (how quantized classifiers store softmax).

    Read from an interpreter without delegates: XNNPack hides the ops it takes over."""
    scale, zero_point = output["quantization"]
    if scale and quantized_to_unit_range(output["dtype"], scale, zero_point):
        return True
    plain = Interpreter(
        model_path=str(path),
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    return any(
        output["index"] in op["outputs"] and op["op_name"] == "SOFTMAX"
        for op in plain._get_ops_details()
    )
