"""The tutorial's `/predict` (multipart) and TF Serving / KServe V1 (`{"instances": ...}`):
both answer the top-k labels of each image."""

from __future__ import annotations

import base64
import binascii
import json

from flask import Flask, Response, jsonify, request

from ...service import top_predictions
from ..dataplane import DataPlane
from ..errors import InvalidInput, UnsupportedMediaType


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
        results = _top_labels(plane, [upload.read() for upload in uploads], top_k)
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
        plane.check_model(name)
        return jsonify(plane.service.describe())

    @app.post("/v1/models/<name>:predict")
    def v1_predict(name: str) -> Response:
        request.max_content_length = plane.json_body_limit
        plane.check_model(name)
        top_k = _top_k(request.args.get("top_k"), plane)
        uploads = _v1_instances(request.get_data())
        return jsonify(predictions=_top_labels(plane, uploads, top_k))


def _top_labels(
    plane: DataPlane, uploads: list[bytes], top_k: int
) -> list[list[dict[str, object]]]:
    labels = plane.service.classifier.labels
    return [top_predictions(row, labels, top_k) for row in plane.classify(list(uploads))]


def _top_k(raw: str | None, plane: DataPlane) -> int:
    """`top_k` from the request (1 to the number of labels), or the server's default."""
    labels = len(plane.service.classifier.labels)
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
