"""Which backend and precision serve the model, and loading it through that backend's module.

The choice is made from cheap facts (what is installed, the CPU's flags, the model file's
kind) so the CLI can refuse an impossible combination before gunicorn starts, with one
line naming the settings; never a silent fallback to something else."""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..weights import converted_ir_beside, int8_ir_beside, weights_path
from . import cpu
from .base import Classifier, ModelLoadError
from .formats import RUNTIMES, format_of, source_files
from .labels import load_labels

if TYPE_CHECKING:
    from ..config import Settings


def installed(package: str) -> bool:
    """Whether a runtime can be imported, without importing it (seconds, for TensorFlow)."""
    return importlib.util.find_spec(package) is not None


def choose_backend(settings: Settings) -> str:
    """MODEL_BACKEND resolved: `auto` is OpenVINO where it is installed and takes the model."""
    try:
        model_format = format_of(settings.model_file)
    except ValueError as error:
        raise ModelLoadError(str(error)) from None
    modules = model_format.modules
    if settings.backend == "auto":
        usable = [b for b, module in modules.items() if installed(RUNTIMES[module])]
        if not usable:
            raise ModelLoadError(
                f"no backend installed can serve {model_format.what}: install "
                "'kubeclassify-modelserver[cpu]'"
            )
        return "openvino" if "openvino" in usable else usable[0]
    if settings.backend not in modules:
        raise ModelLoadError(
            f"MODEL_BACKEND={settings.backend} cannot serve {model_format.what} "
            f"(MODEL_FILE={settings.model_file}): use MODEL_BACKEND={' or '.join(modules)}"
        )
    if not installed(RUNTIMES[modules[settings.backend]]):
        raise ModelLoadError(
            f"MODEL_BACKEND={settings.backend} but {RUNTIMES[modules[settings.backend]]} is "
            "not installed: install 'kubeclassify-modelserver[cpu]' or use MODEL_BACKEND=auto"
        )
    return settings.backend


def choose_precision(requested: str, backend: str, quantized: bool | None) -> str:
    """MODEL_PRECISION resolved for a model (`quantized` None: not known yet).

    `auto` is INT8 for a quantized model, else BF16 where OpenVINO runs on a CPU with native
    BF16 (AVX512_BF16 or AMX), else FP32. A quantized model keeps its INT8 operations whatever
    is asked; what is asked sets its float parts, FP32 unless `bf16`."""
    if requested == "auto":
        if quantized:
            return "int8"
        return "bf16" if backend == "openvino" and cpu.native_bf16() else "fp32"
    if requested == "bf16" and backend != "openvino":
        raise ModelLoadError(
            f"MODEL_PRECISION=bf16 needs MODEL_BACKEND=openvino (got {backend}, which serves fp32)"
        )
    if requested == "bf16" and not cpu.native_bf16():
        raise ModelLoadError(
            "MODEL_PRECISION=bf16 but this CPU has no native BF16 (neither avx512_bf16 nor "
            "amx_bf16 in /proc/cpuinfo): use MODEL_PRECISION=fp32 or auto"
        )
    if requested == "int8" and quantized is False:
        raise ModelLoadError(
            "MODEL_PRECISION=int8 needs a quantized model, and this one is float: "
            "make an INT8 IR with `modelserver quantize` (for ResNet50 it goes beside "
            "MODEL_WEIGHTS, where MODEL_BACKEND=openvino finds it) or set MODEL_FILE=<ir>.xml"
        )
    return requested


def check_settings(settings: Settings) -> tuple[str, str]:
    """(backend, precision) as far as they can be settled without loading the model: what
    the CLI checks before gunicorn starts. Raises `ModelLoadError` with one line."""
    backend = choose_backend(settings)
    model_file = settings.model_file
    if model_file is not None:
        for path in source_files(model_file):
            where = "" if path == model_file else f" ({path.name} beside it)"
            if not path.is_file():
                raise ModelLoadError(f"MODEL_FILE={model_file}: no such file{where}")
            try:  # a claim's files keep their owners and modes: say so, not "unreadable model"
                path.open("rb").close()
            except OSError as error:
                raise ModelLoadError(
                    f"MODEL_FILE={model_file}{where} cannot be opened by uid {os.getuid()}: "
                    f"{error.strerror}"
                ) from None
    if backend == "openvino" and needs_conversion(settings) and not installed("tensorflow"):
        if model_file is None:
            ir = converted_ir_beside(weights_path(settings.weights))
            missing = f"the built-in ResNet50 has no OpenVINO IR at {ir} (beside MODEL_WEIGHTS)"
            convert = "`modelserver convert --weights <weights>` writes it"
        else:
            missing = f"MODEL_FILE={model_file} must be converted for OpenVINO"
            convert = f"serve the .xml that `modelserver convert {model_file.name}` writes"
        raise ModelLoadError(
            f"{missing}, and TensorFlow, which converts it, is not installed (the OpenVINO "
            f"image has none): {convert} where TensorFlow is, or use the TensorFlow image"
        )
    quantized = known_quantized(settings, backend)
    return backend, choose_precision(settings.precision, backend, quantized)


def baked_ir(settings: Settings) -> Path | None:
    """The IR OpenVINO serves the built-in ResNet50 from, where one lies beside MODEL_WEIGHTS
    (`modelserver convert`, or `quantize` for int8, wrote it; the image bakes them): then
    neither TensorFlow nor the weights file is needed."""
    if settings.model_file is not None:
        return None
    weights = weights_path(settings.weights)
    int8 = settings.precision == "int8"
    ir = int8_ir_beside(weights) if int8 else converted_ir_beside(weights)
    return ir if ir.is_file() else None


def needs_conversion(settings: Settings) -> bool:
    """Whether OpenVINO can serve the model only once TensorFlow has converted it: a .keras
    file, or the built-in ResNet50 without its IR (int8 has no conversion: it needs the
    quantized IR, see `choose_precision`)."""
    if settings.model_file is not None:
        return settings.model_file.suffix == ".keras"
    return settings.precision != "int8" and baked_ir(settings) is None


def known_quantized(settings: Settings, backend: str) -> bool | None:
    """Whether the model carries INT8 operations, where that is cheap to tell; else None.

    ResNet50 weights are float, but with MODEL_PRECISION=int8 OpenVINO serves the INT8 IR
    beside them where there is one; .keras files are float; an IR says so in its XML."""
    model_file = settings.model_file
    if model_file is None:
        if settings.precision != "int8" or backend != "openvino":
            return False
        model_file = int8_ir_beside(weights_path(settings.weights))
        if not model_file.is_file():
            return False
    if model_file.suffix == ".keras":
        return False
    if model_file.suffix == ".xml":
        return 'type="FakeQuantize"' in model_file.read_text(errors="replace")
    return None


def load_classifier(settings: Settings) -> Classifier:
    """The classifier the settings name, loaded by the module of the chosen backend."""
    backend, _ = check_settings(settings)
    module_name = format_of(settings.model_file).modules[backend]
    module = importlib.import_module(f"{__package__}.{module_name}")
    labels = load_labels(settings.labels_file) if settings.labels_file else None
    classifier: Classifier = module.load(settings, labels, cpu.threads_per_worker(settings.workers))
    return classifier
