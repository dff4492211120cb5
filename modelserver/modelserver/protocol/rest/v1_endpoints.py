"""The tutorial's `/predict` (multipart) and TF Serving / KServe V1 (`{"instances": ...}`):
both answer the top-k labels of each image, formatted here from the data plane's
probabilities."""

from __future__ import annotations

import base64
import binascii
import json

import numpy as np
from flask import Flask, Response, jsonify, request

from ..dataplane import DataPlane
from ..errors import InvalidInput, UnsupportedMediaType
from ..tensors import Tensor

Prediction = dict[str, object]


def register(app: Flask, plane: DataPlane) -> None:
    @app.post("/predict")
    def predict() -> Response:
        if request.mimetype != "multipart/form-data":
            raise UnsupportedMediaType(
                "send the image as multipart/form-data in a field named 'image'"
            )
        uploads = request.files.getlist("image")
        if not uploads:
            raise InvalidInput("no 'image' field: send the image in a field named 'image'")
        top_k = _top_k(request.args.get("top_k") or request.form.get("top_k"), plane)
        results = _top_labels(plane, plane.model_name, [upload.read() for upload in uploads], top_k)
        if len(results) == 1:
            return jsonify(success=True, predictions=results[0])
        return jsonify(
            success=True,
            results=[
                {"filename": upload.filename, "predictions": predictions}
                for upload, predictions in zip(uploads, results, strict=True)
            ],
        )

    @app.get("/v1/models/<name>")
    def model_status(name: str) -> Response:
        return jsonify(plane.model_status(name))

    @app.post("/v1/models/<name>:predict")
    def v1_predict(name: str) -> Response:
        request.max_content_length = plane.json_body_limit
        plane.check_model(name)
        top_k = _top_k(request.args.get("top_k"), plane)
        uploads = _v1_instances(request.get_data())
        return jsonify(predictions=_top_labels(plane, name, uploads, top_k))


def _top_labels(
    plane: DataPlane, name: str, uploads: list[bytes], top_k: int
) -> list[list[Prediction]]:
    """Each image's `top_k` labels, inferred as a BYTES tensor of encoded images."""
    images = Tensor("image", "BYTES", (len(uploads),), uploads)
    (probabilities,) = plane.infer(name, None, [images], [])
    assert isinstance(probabilities.data, np.ndarray)
    labels = plane.labels
    return [top_predictions(row, labels, top_k) for row in probabilities.data]


def top_predictions(
    probabilities: np.ndarray, labels: tuple[str, ...], top_k: int
) -> list[Prediction]:
    """The `top_k` most probable labels, most probable first, in the tutorial's shape."""
    best = np.argsort(-probabilities, kind="stable")[:top_k]
    return [{"label": labels[i], "probability": float(probabilities[i])} for i in best]


def _top_k(raw: str | None, plane: DataPlane) -> int:
    """`top_k` from the request (1 to the number of labels), or the server's default."""
    labels = len(plane.labels)
    if raw is None or raw == "":
        return min(plane.settings.top_k, labels)
    try:
        top_k = int(raw)
    except ValueError:
        raise InvalidInput(f"top_k must be a whole number, got {raw[:40]!r}") from None
    if not 1 <= top_k <= labels:
        raise InvalidInput(f"top_k must be between 1 and {labels}, got {top_k}")
    return top_k


def _v1_instances(body: bytes) -> list[bytes]:
    """The images of a TF Serving / KServe V1 request: `{"instances": [{"b64": ...}]}`."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidInput("the body is not valid UTF-8 JSON") from None
    instances = document.get("instances") if isinstance(document, dict) else None
    if not isinstance(instances, list) or not instances:
        raise InvalidInput('expected {"instances": [{"b64": "<base64 image>"}, ...]}')
    return [_decode_instance(position, item) for position, item in enumerate(instances)]


def _decode_instance(position: int, instance: object) -> bytes:
    if isinstance(instance, dict) and isinstance(instance.get("image_bytes"), dict):
        instance = instance["image_bytes"]
    encoded = instance.get("b64") if isinstance(instance, dict) else None
    if not isinstance(encoded, str):
        raise InvalidInput(f'instance {position + 1}: expected {{"b64": "<base64 image>"}}')
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"instance {position + 1}: the b64 value is not base64") from None
