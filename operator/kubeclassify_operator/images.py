"""Which model-server image runs a classifier that names none: the lean OpenVINO image, unless
its spec needs TensorFlow (or an NVIDIA GPU, which only TensorFlow's CUDA build drives).

The three defaults are the published images; a cluster that mirrors them sets the operator's
KUBECLASSIFY_SERVER_IMAGE{,_TENSORFLOW,_GPU} variables, read once when the operator starts."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass

from kubeclassify_operator.spec import ImageClassifierSpec, InvalidSpec

GPU_RESOURCE = "nvidia.com/gpu"


@dataclass(frozen=True)
class ServerImages:
    """The images the operator chooses from; each serves what its name says (docs/images.md)."""

    openvino: str = "ghcr.io/kubeclassify/modelserver:0.1.0"
    tensorflow: str = "ghcr.io/kubeclassify/modelserver:0.1.0-tensorflow"
    gpu: str = "ghcr.io/kubeclassify/modelserver:0.1.0-gpu"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ServerImages:
        defaults = cls()
        return cls(
            openvino=environ.get("KUBECLASSIFY_SERVER_IMAGE") or defaults.openvino,
            tensorflow=environ.get("KUBECLASSIFY_SERVER_IMAGE_TENSORFLOW") or defaults.tensorflow,
            gpu=environ.get("KUBECLASSIFY_SERVER_IMAGE_GPU") or defaults.gpu,
        )


@functools.cache
def configured() -> ServerImages:
    """The images this operator process was started with."""
    return ServerImages.from_environ(os.environ)


def tensorflow_need(spec: ImageClassifierSpec) -> str | None:
    """What in the spec needs TensorFlow in the image, said as the user wrote it; else None."""
    if spec.runtime.backend == "tensorflow":
        return "runtime.backend: tensorflow"
    if spec.model_source is not None and spec.model_source.model_format == "keras":
        return "a .keras model (TensorFlow reads it, also to convert it for OpenVINO)"
    return None


def wants_gpu(spec: ImageClassifierSpec) -> bool:
    return any(
        GPU_RESOURCE in amounts for amounts in (spec.resources.requests, spec.resources.limits)
    )


def server_image(spec: ImageClassifierSpec, images: ServerImages) -> str:
    """spec.image, else the image that serves the spec. Raises `InvalidSpec` (reported in the
    status, never a crash loop) where spec.image names the OpenVINO-only image for a spec that
    needs TensorFlow, or the GPU image is to run OpenVINO."""
    need = tensorflow_need(spec)
    if spec.image is not None:
        if need and spec.image == images.openvino:
            raise InvalidSpec(
                f"spec.image: {spec.image} has OpenVINO only, and {need} needs TensorFlow: "
                f"remove spec.image (the operator then runs {images.tensorflow}) or set it to "
                "an image with TensorFlow"
            )
        return spec.image
    if wants_gpu(spec):
        if spec.runtime.backend == "openvino":
            raise InvalidSpec(
                f"spec.runtime.backend: openvino cannot drive {GPU_RESOURCE}: use auto or "
                f"tensorflow (the operator runs {images.gpu}), or drop the GPU resources"
            )
        return images.gpu
    return images.tensorflow if need else images.openvino
