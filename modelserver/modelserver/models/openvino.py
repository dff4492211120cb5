"""The OpenVINO backend: where OpenVINO runs. The only module that imports it.

Every source becomes an OpenVINO model: ResNet50 weights and `.keras` files are converted
from Keras (`openvino.convert_model`, with their preprocessing folded into the graph, so
that request threads only hand over uint8 pixels), `.tflite` files go through OpenVINO's
TFLite frontend, and an IR (`.xml` + `.bin`, such as `modelserver quantize` writes) is read
as it is. Conversions are kept in CACHE_DIR as IRs, keyed by the source's digest, and
OpenVINO keeps its compiled blobs there too: a restart neither imports TensorFlow nor
compiles again. One compiled model per worker, its threads sized to the worker's cores.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import openvino as ov  # type: ignore[import-untyped]
from openvino.preprocess import PrePostProcessor  # type: ignore[import-untyped]
from PIL import Image

from ..weights import converted_ir_beside, resolve_weights
from .base import (
    CAFFE_BGR_MEANS,
    Classifier,
    ModelLoadError,
    Runtime,
    as_probabilities,
    files_digest,
    rgb_input_size,
    tflite_input,
)
from .formats import source_files
from .labels import labels_for
from .registry import baked_ir, choose_precision

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger(__name__)

# OpenVINO's element types, as `float_precision` names them.
_FLOAT_PRECISIONS = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}
# Ops that pass a softmax's values on unchanged in kind, between it and the model's output.
_PASS_THROUGH = {"Convert", "FakeQuantize", "Reshape", "Squeeze", "Identity"}
# Bump when what a conversion writes changes, so that old cached IRs are not reused.
_CONVERSION_VERSION = "1"


def load(settings: Settings, labels: tuple[str, ...] | None, threads: int) -> Classifier:
    core = ov.Core()
    with conversion_dir(core, settings.cache_dir) as directory:
        source = model_source(settings, directory, labels)
        return OpenVINOClassifier(core, source, threads, settings.precision)


@contextmanager
def conversion_dir(core: ov.Core, cache_dir: Path | None) -> Iterator[Path]:
    """Where Keras models are converted to: CACHE_DIR (where the core then keeps its compiled
    models too), or without one a scratch folder, removed once the model is compiled."""
    usable = usable_cache_dir(cache_dir)
    if usable is not None:
        core.set_property({"CACHE_DIR": str(usable / "compiled")})
        yield usable
        return
    with tempfile.TemporaryDirectory(prefix="modelserver-ir-") as scratch:
        yield Path(scratch)


@dataclass(frozen=True)
class ModelSource:
    """What OpenVINO reads (`model_path`: an IR, converted or given, or a .tflite file), and
    what it stands for: the served name, the user's files, the labels given with them."""

    model_path: Path
    name: str
    files: tuple[Path, ...]
    labels: tuple[str, ...] | None = None


def model_source(
    settings: Settings, directory: Path, labels: tuple[str, ...] | None = None
) -> ModelSource:
    """The model the settings name, converted to an IR in `directory` where it comes from
    Keras (`conversion_dir`)."""
    path = settings.model_file
    if path is None:
        baked = baked_ir(settings)
        if baked is not None:
            return ModelSource(baked, "resnet50", source_files(baked))
        weights = resolve_weights(settings.weights)
        ir = converted_ir(
            "resnet50", (weights,), directory, lambda: resnet50_model(weights), caffe=True
        )
        return ModelSource(ir, "resnet50", (weights,))
    files = source_files(path)
    if path.suffix == ".keras":
        ir = converted_ir(path.stem, files, directory, lambda: keras_model(path), caffe=False)
        return ModelSource(ir, path.stem, files, labels)
    return ModelSource(path, path.stem, files, labels)


class OpenVINOClassifier(Classifier):
    """A model compiled for the CPU by OpenVINO at the chosen precision.

    Its input is RGB pixels as the model declares them: uint8 for converted models and
    quantized TFLite files, float pixels in [0, 255] for an IR, the TFLite conventions for
    a TFLite file. A model built for batch 1 runs image by image.

    One infer request with all the worker's threads (the LATENCY hint, one stream): the
    batcher hands over one batch at a time, so more streams would only split the cores
    between requests that never run side by side."""

    def __init__(self, core: ov.Core, source: ModelSource, threads: int, precision: str) -> None:
        model = read_model(core, source.model_path, source.files[0])
        model_input = model.inputs[0]
        self._size = rgb_input_size(_dims(model_input.get_partial_shape()), source.files[0])
        self._one_at_a_time = not model_input.get_partial_shape()[0].is_dynamic
        self._input_dtype = model_input.get_element_type().to_dtype()
        self._tflite = source.model_path.suffix == ".tflite"
        outputs = model.outputs[0].get_partial_shape()[-1].get_length()
        labels = labels_for(outputs, source.labels, source.files[0])
        quantized = any(op.get_type_name() == "FakeQuantize" for op in model.get_ordered_ops())
        options = compile_options(choose_precision(precision, "openvino", quantized), threads)
        compiled = core.compile_model(str(source.model_path), "CPU", options)
        runtime = compiled_runtime(compiled, quantized)
        if runtime.float_precision != _FLOAT_PRECISIONS[options["INFERENCE_PRECISION_HINT"]]:
            raise ModelLoadError(
                f"MODEL_PRECISION={precision}: OpenVINO compiled the model for "
                f"{runtime.float_precision}, not {options['INFERENCE_PRECISION_HINT']}, "
                "on this CPU"
            )
        self._request = compiled.create_infer_request()
        self._dequantize, self._outputs_probabilities = output_meaning(model)
        super().__init__(source.name, labels, source.files, runtime)

    @property
    def input_size(self) -> tuple[int, int]:
        return self._size

    def to_input(self, image: Image.Image) -> np.ndarray:
        if self._tflite:
            return tflite_input(image, self._input_dtype)
        return np.asarray(image, dtype=self._input_dtype)

    def warm_up(self, batch_sizes: tuple[int, ...]) -> None:
        """One pass: the model is compiled for every batch size already, and a batch-16 warm-up
        would cost the start-up seconds (a cached restart is ready in about one)."""
        super().warm_up(batch_sizes[:1])

    def predict_batch(self, batch: np.ndarray) -> np.ndarray:
        if self._one_at_a_time:
            outputs = np.concatenate([self._infer(image[np.newaxis]) for image in batch])
        else:
            outputs = self._infer(batch)
        return as_probabilities(outputs, already=self._outputs_probabilities)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        self._request.infer({0: batch}, share_inputs=True)
        raw: np.ndarray = self._request.get_output_tensor(0).data.astype(np.float32)
        low, scale = self._dequantize
        return (raw - low) * scale if scale else raw


def compile_options(chosen: str, threads: int) -> dict[str, Any]:
    """What the CPU plugin is asked for, MODEL_PRECISION resolved (`registry.choose_precision`).

    The float arithmetic is always named: OpenVINO's own default on a CPU with native BF16 is
    bf16, which would silently run a quantized model's float parts (its dequantized tail and
    softmax) in BF16 on some nodes and FP32 on others. They run in FP32, as the model's own
    reference computes them, unless MODEL_PRECISION=bf16 asks otherwise."""
    return {
        "INFERENCE_PRECISION_HINT": "bf16" if chosen == "bf16" else "f32",
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": threads,
    }


def compiled_runtime(compiled: ov.CompiledModel, quantized: bool) -> Runtime:
    """How the compiled model runs, read back from it rather than taken from the request."""
    element_type = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    return Runtime(
        backend="openvino",
        device="CPU",
        threads=int(compiled.get_property("INFERENCE_NUM_THREADS")),
        float_precision=_FLOAT_PRECISIONS.get(element_type, element_type),
        quantized=quantized,
    )


def output_meaning(model: ov.Model) -> tuple[tuple[float, float], bool]:
    """How to read the model's output: (offset, scale) to dequantize an integer output (scale
    0 for a float output), and whether it already is a distribution (the graph ends in a
    softmax, or a quantized output whose range lies within [0, 1])."""
    node = model.outputs[0].get_node().input_value(0).get_node()
    dequantize = (0.0, 0.0)
    integer_output = model.outputs[0].get_element_type().is_integral()
    while node.get_type_name() in _PASS_THROUGH:
        if node.get_type_name() == "FakeQuantize" and integer_output:
            in_low, in_high, out_low, out_high = (
                float(node.input_value(i).get_node().get_data().flat[0]) for i in range(1, 5)
            )
            scale = (in_high - in_low) / (out_high - out_low)
            dequantize = (out_low - in_low / scale, scale)
            if in_low >= 0 and in_high <= 1 + 1e-6:
                return dequantize, True
        node = node.input_value(0).get_node()
    return dequantize, node.get_type_name() == "Softmax"


def read_model(core: ov.Core, path: Path, named: Path) -> ov.Model:
    try:
        return core.read_model(str(path))
    except Exception as error:
        # OpenVINO's first lines name its own source files ("Exception from src/...:84:").
        lines = [line for line in str(error).splitlines() if line.strip()]
        said = [line for line in lines if not line.startswith(("Exception from", "Check "))]
        reason = (said or lines or [type(error).__name__])[0].strip()
        raise ModelLoadError(f"MODEL_FILE={named} cannot be read by OpenVINO: {reason}") from None


def usable_cache_dir(cache_dir: Path | None) -> Path | None:
    """CACHE_DIR if it can be written; else None, said in the log (the server still runs)."""
    if cache_dir is None:
        return None
    try:
        (cache_dir / "compiled").mkdir(parents=True, exist_ok=True)
        if os.access(cache_dir, os.W_OK):
            return cache_dir
    except OSError:
        pass
    log.warning("CACHE_DIR=%s cannot be written: converting and compiling afresh", cache_dir)
    return None


def converted_ir(
    name: str,
    files: tuple[Path, ...],
    directory: Path,
    keras_model: Callable[[], Any],
    *,
    caffe: bool,
) -> Path:
    """The IR of a Keras model in `directory`, reused when converted there before (same
    source digest)."""
    key = files_digest(files)[:16] + "-v" + _CONVERSION_VERSION
    ir = directory / "ir" / f"{name}-{key}.xml"
    if ir.is_file() and ir.with_suffix(".bin").is_file():
        log.info("OpenVINO IR of %s from the cache: %s", files[0], ir)
        return ir
    save_ir(convert_keras(keras_model(), caffe=caffe), ir)
    return ir


def convert(model_file: Path | None, weights: str, output: Path | None) -> Path:
    """`modelserver convert`: the IR of a .keras file (beside it by default) or of the
    built-in ResNet50's weights (where `registry.baked_ir` finds it), for OpenVINO to serve
    without TensorFlow. The same graph as a conversion at start-up."""
    if model_file is None:
        source = resolve_weights(weights)
        model, caffe, default = resnet50_model(source), True, converted_ir_beside(source)
    else:
        model, caffe, default = keras_model(model_file), False, model_file.with_suffix(".xml")
    ir = output or default
    save_ir(convert_keras(model, caffe=caffe), ir)
    return ir


def save_ir(model: ov.Model, ir: Path) -> None:
    """Write an IR atomically: the .xml last, so an .xml found always has its .bin."""
    ir.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=ir.parent)) / ir.name
    ov.save_model(model, str(partial), compress_to_fp16=False)
    partial.with_suffix(".bin").replace(ir.with_suffix(".bin"))
    partial.replace(ir)
    partial.parent.rmdir()


def convert_keras(model: Any, *, caffe: bool) -> ov.Model:
    """A Keras classifier as an OpenVINO model taking uint8 RGB pixels (batch, h, w, 3);
    `caffe` folds ResNet50's preprocessing (BGR, means subtracted) into the graph."""
    _, height, width, _ = model.input_shape
    converted = ov.convert_model(model, input=[(-1, int(height), int(width), 3)])
    steps = PrePostProcessor(converted)
    steps.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    steps.input().model().set_layout(ov.Layout("NHWC"))
    preprocess = steps.input().preprocess().convert_element_type(ov.Type.f32)
    if caffe:
        preprocess.reverse_channels().mean(list(CAFFE_BGR_MEANS))
    return steps.build()


def resnet50_model(weights: Path) -> Any:
    from .keras import resnet50_model as build

    return build(weights)


def keras_model(path: Path) -> Any:
    from .keras import load_keras_model

    return load_keras_model(path)


def _dims(shape: ov.PartialShape) -> list[int | None]:
    return [None if d.is_dynamic else d.get_length() for d in shape]
