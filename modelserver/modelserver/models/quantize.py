"""INT8 by post-training quantization (NNCF): calibrate on a folder of images, check top-1
agreement with FP32 on a held-out folder, write an OpenVINO IR only if it holds up.
The only module that imports NNCF."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import nncf  # type: ignore[import-untyped]
import numpy as np
import openvino as ov  # type: ignore[import-untyped]

from ..images import ImageError
from .base import ModelLoadError
from .cpu import threads_per_worker
from .labels import load_labels
from .openvino import OpenVINOClassifier, conversion_dir, model_source

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.99


class QuantizationRefused(RuntimeError):
    """The INT8 model disagrees with FP32 too often; the message gives the figure."""


def quantize(
    settings: Settings,
    calibration: Path,
    held_out: Path,
    output: Path,
    threshold: float = DEFAULT_THRESHOLD,
) -> tuple[float, int]:
    """Write the INT8 IR of the model `settings` name to `output` (.xml, .bin beside it);
    (top-1 agreement with FP32, images) on `held_out`; refuse below `threshold`."""
    core = ov.Core()
    threads = threads_per_worker(1)
    labels = load_labels(settings.labels_file) if settings.labels_file else None
    with conversion_dir(core, settings.cache_dir) as directory:
        source = model_source(settings, directory, labels)
        fp32 = OpenVINOClassifier(core, source, threads, "fp32")
        calibration_inputs = folder_inputs(fp32, calibration, settings.max_image_pixels)
        held_out_inputs = folder_inputs(fp32, held_out, settings.max_image_pixels)
        quantized = nncf.quantize(
            core.read_model(str(source.model_path)),
            nncf.Dataset(calibration_inputs, lambda array: array[np.newaxis]),
            subset_size=len(calibration_inputs),
        )
    with tempfile.TemporaryDirectory(dir=output.parent) as scratch:
        candidate = Path(scratch) / output.name
        ov.save_model(quantized, str(candidate), compress_to_fp16=False)
        int8 = OpenVINOClassifier(core, replace(source, model_path=candidate), threads, "int8")
        agreement = top1_agreement(fp32, int8, held_out_inputs)
        if agreement < threshold:
            raise QuantizationRefused(
                f"INT8 top-1 agrees with FP32 on {agreement:.1%} of the {len(held_out_inputs)} "
                f"held-out images of {held_out}, below the threshold of {threshold:.1%}: "
                f"{output} not written (calibrate with more, or more typical, images)"
            )
        candidate.with_suffix(".bin").replace(output.with_suffix(".bin"))
        candidate.replace(output)
    return agreement, len(held_out_inputs)


def folder_inputs(
    classifier: OpenVINOClassifier, folder: Path, max_pixels: int
) -> list[np.ndarray]:
    """Every image of `folder` (sorted by name) as the model's input; other files are skipped."""
    inputs = []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            inputs.append(classifier.preprocess(path.read_bytes(), max_pixels))
        except ImageError:
            log.info("skipping %s: not an image", path)
    if not inputs:
        raise ModelLoadError(f"{folder}: no images")
    return inputs


def top1_agreement(
    reference: OpenVINOClassifier, candidate: OpenVINOClassifier, inputs: list[np.ndarray]
) -> float:
    """The share of inputs whose top-1 label is the same under both models."""
    same = 0
    for start in range(0, len(inputs), 16):
        batch = np.stack(inputs[start : start + 16])
        same += int(
            np.sum(
                reference.predict_batch(batch).argmax(axis=-1)
                == candidate.predict_batch(batch).argmax(axis=-1)
            )
        )
    return same / len(inputs)
