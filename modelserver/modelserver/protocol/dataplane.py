"""What every protocol asks of the model, in one place: readiness, metadata, size limits,
inference (admission, batching and the queue bound are the service's), metrics labels.

Protocols talk to the model only through `DataPlane`, and infer one way: tensors in, tensors
back (`infer`). Formatting them is theirs (labels and top-k for `/predict` and V1, the wire
forms of tensors for V2), but for the classification extension, which V2's REST and gRPC
forms share.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import metrics
from ..config import Settings
from ..service import ImageInput, ModelService
from .errors import (
    NOT_READY_RETRY_AFTER_S,
    OVERLOADED_RETRY_AFTER_S,
    InvalidInput,
    ModelNotFound,
)
from .tensors import NUMERIC, Tensor

SERVER_NAME = "kubeclassify-modelserver"
MODEL_VERSION = "1"  # one model a server, one version: the protocol's paths still name it
PROBABILITIES = "probabilities"
EXTENSIONS = ("binary_tensor_data", "classification")
# Room for what frames the images in a request (JSON, a protobuf message), beyond their bytes.
_ENVELOPE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Readiness:
    """Whether the model takes requests, and if not why and when to ask again."""

    ready: bool
    status: str  # loading, ready, draining, failed, or overloaded (at the queue bound)
    error: str | None = None
    retry_after_s: int | None = None


@dataclass(frozen=True)
class RequestedOutput:
    """An output a request asks for; `classification` > 0 asks for the top k as
    "score:index:label" strings (Triton's classification extension)."""

    name: str
    classification: int = 0


class DataPlane:
    """One worker's model as every protocol sees it."""

    def __init__(self, service: ModelService) -> None:
        self._service = service
        self.settings: Settings = service.settings
        # MAX_UPLOAD_BYTES limits the image bytes; JSON carries them in base64, 4/3 the size.
        self.raw_body_limit = self.settings.max_upload_bytes
        self.json_body_limit = self.settings.max_upload_bytes * 4 // 3 + _ENVELOPE_BYTES
        self.message_limit = self.settings.max_upload_bytes + _ENVELOPE_BYTES

    @property
    def model_name(self) -> str:
        return self.settings.served_name

    @property
    def labels(self) -> tuple[str, ...]:
        """The model's labels, by output index; `NotReady` until it is loaded."""
        return self._service.classifier.labels

    def readiness(self) -> Readiness:
        service = self._service
        if service.ready and service.overloaded:
            full = "the request queue is full"
            return Readiness(False, "overloaded", full, OVERLOADED_RETRY_AFTER_S)
        if service.ready:
            return Readiness(True, service.state.value)
        return Readiness(False, service.state.value, service.failure, NOT_READY_RETRY_AFTER_S)

    def check_model(self, name: str, version: str | None = None) -> None:
        """Raise `ModelNotFound` unless `name` (and `version`, when given) is what is served."""
        if name != self.model_name:
            raise ModelNotFound(f"no model {name!r}: this server serves {self.model_name!r}")
        if version not in (None, "", MODEL_VERSION):
            raise ModelNotFound(
                f"model {name!r} has no version {version!r}: its one version is {MODEL_VERSION!r}"
            )

    def model_ready(self, name: str, version: str | None = None) -> bool:
        self.check_model(name, version)
        return self.readiness().ready

    @staticmethod
    def server_metadata() -> dict[str, object]:
        return {
            "name": SERVER_NAME,
            "version": importlib.metadata.version(SERVER_NAME),
            "extensions": list(EXTENSIONS),
        }

    def model_status(self, name: str) -> dict[str, Any]:
        """What serves and how it is doing: state, queue, batching, runtime (V1's status)."""
        self.check_model(name)
        return self._service.describe()

    def model_metadata(self, name: str, version: str | None = None) -> dict[str, object]:
        """The model's inputs and outputs. A request sends one input, whatever its name:
        BYTES [N] encoded images, or UINT8 / FP32 [N, H, W, 3] pixels (resized to fit)."""
        self.check_model(name, version)
        classifier = self._service.classifier
        width, height = classifier.input_size
        return {
            "name": self.model_name,
            "versions": [MODEL_VERSION],
            "platform": "kubeclassify",
            "inputs": [
                {"name": "image", "datatype": "BYTES", "shape": [-1]},
                {"name": "pixels", "datatype": "FP32", "shape": [-1, height, width, 3]},
            ],
            "outputs": [
                {"name": PROBABILITIES, "datatype": "FP32", "shape": [-1, len(classifier.labels)]}
            ],
        }

    def infer(
        self,
        name: str,
        version: str | None,
        inputs: list[Tensor],
        outputs: list[RequestedOutput],
    ) -> list[Tensor]:
        """Every protocol's inference (the Open Inference Protocol's form): one input tensor
        of images, the requested outputs (by default the probabilities) back, through
        admission and the batcher."""
        self.check_model(name, version)
        labels = self.labels
        for output in outputs:
            if output.name != PROBABILITIES:
                name = output.name[:60]
                raise InvalidInput(f"no output {name!r}: the output is {PROBABILITIES!r}")
            if not 0 <= output.classification <= len(labels):
                raise InvalidInput(
                    f"classification must be between 1 and {len(labels)}, "
                    f"got {output.classification}"
                )
        if len(inputs) != 1:
            raise InvalidInput(f"expected one input tensor of images, got {len(inputs)}")
        probabilities = self._service.infer(images_of(inputs[0]))
        return [
            classification(probabilities, labels, output.classification)
            if output.classification
            else Tensor(PROBABILITIES, "FP32", probabilities.shape, probabilities)
            for output in outputs or [RequestedOutput(PROBABILITIES)]
        ]

    def begin_draining(self) -> None:
        """Report not-ready while the requests in flight finish (SIGTERM)."""
        self._service.begin_draining()


def images_of(tensor: Tensor) -> list[ImageInput]:
    """The images an input tensor holds: BYTES [N] encoded, or [N, H, W, 3] pixels."""
    if tensor.datatype == "BYTES":
        if len(tensor.shape) != 1:
            raise InvalidInput(
                f"input {tensor.name!r}: BYTES images take shape [N], got {list(tensor.shape)}"
            )
        images: list[ImageInput] = list(tensor.data)
    else:
        assert tensor.datatype in NUMERIC and isinstance(tensor.data, np.ndarray)
        if len(tensor.shape) != 4 or tensor.shape[3] != 3:
            raise InvalidInput(
                f"input {tensor.name!r}: {tensor.datatype} pixels take shape [N, H, W, 3], "
                f"got {list(tensor.shape)}"
            )
        images = list(tensor.data)
    if not images:
        raise InvalidInput(f"input {tensor.name!r} holds no image")
    return images


def classification(probabilities: np.ndarray, labels: tuple[str, ...], k: int) -> Tensor:
    """Triton's classification extension: the top k of each row as "score:index:label"."""
    best = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    rows = [
        f"{row[i]:f}:{i}:{labels[i]}".encode()
        for row, top in zip(probabilities, best, strict=True)
        for i in top
    ]
    return Tensor(PROBABILITIES, "BYTES", (len(probabilities), k), rows)


def observe_request(endpoint: str, method: str, code: str, seconds: float) -> None:
    """Every protocol's requests in the same two metrics, labelled by endpoint."""
    metrics.REQUESTS.labels(endpoint, method, code).inc()
    metrics.LATENCY.labels(endpoint).observe(seconds)
