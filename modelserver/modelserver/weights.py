"""Where the ResNet50 weights come from: the official Keras download, cached, or a local file.

Kept free of TensorFlow so that the CLI can settle the weights (and fail with a clear
message when offline) before gunicorn starts, and so a Docker build can bake them.
"""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from .fetch import file_digest, partial_file
from .models.formats import MODEL_SUFFIXES

# The file, address and md5 that keras.applications.ResNet50(weights="imagenet") uses.
OFFICIAL_FILE_NAME = "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
OFFICIAL_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/resnet/" + OFFICIAL_FILE_NAME
)
OFFICIAL_MD5 = "2cb95161c43110f7111970584f804107"


class WeightsUnavailable(RuntimeError):
    """The weights cannot be had; the message tells the operator what to set instead."""


def keras_cache_dir() -> Path:
    """Keras' own cache (`$KERAS_HOME/models`), so a file Keras downloaded is reused."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def resolve_weights(spec: str, timeout_s: float = 60.0) -> Path:
    """The local path of the weights that `spec` ('imagenet' or a path) names."""
    path = weights_path(spec)
    if spec != "imagenet":
        if not path.is_file():
            raise WeightsUnavailable(f"MODEL_WEIGHTS={spec}: no such file")
        return path
    if path.is_file() and file_digest(path, "md5") == OFFICIAL_MD5:
        return path
    try:
        download(OFFICIAL_URL, path, OFFICIAL_MD5, timeout_s)
    except (OSError, urllib.error.URLError, ValueError) as error:
        raise WeightsUnavailable(
            f"cannot download the official ResNet50 ImageNet weights from {OFFICIAL_URL} "
            f"({error}). Without internet, set MODEL_WEIGHTS to a local weights file "
            "(Keras' resnet50_weights_tf_dim_ordering_tf_kernels.h5 layout), or MODEL_FILE "
            f"(and MODEL_LABELS) to serve a {', '.join(MODEL_SUFFIXES)} classifier."
        ) from None
    return path


def converted_ir_beside(weights: Path) -> Path:
    """Where `modelserver convert` writes the OpenVINO IR of these weights (what
    Dockerfile.server bakes): OpenVINO serves it at FP32 or BF16 without TensorFlow, and
    without the weights file itself."""
    return weights.with_suffix(".xml")


def int8_ir_beside(weights: Path) -> Path:
    """Where the INT8 IR of these weights lies (`modelserver quantize`'s default output, and
    what the image bakes with `--build-arg INT8=yes`): MODEL_PRECISION=int8 serves it."""
    return weights.with_name(weights.stem + ".int8.xml")


def weights_path(spec: str) -> Path:
    """Where the weights `spec` names are (or will be, once fetched), without fetching."""
    return keras_cache_dir() / OFFICIAL_FILE_NAME if spec == "imagenet" else Path(spec)


def download(url: str, destination: Path, md5: str, timeout_s: float) -> None:
    """Fetch `url` to `destination` atomically, refusing a file whose md5 differs."""
    with partial_file(destination) as partial:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            shutil.copyfileobj(response, partial)
        partial.flush()
        if file_digest(Path(partial.name), "md5") != md5:
            raise ValueError(f"the download's md5 is not {md5}")
