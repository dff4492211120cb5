"""The HTTP layer: the tutorial's `/predict`, the TF Serving / KServe V1 API, probes, metrics.

Every error is JSON, `{"success": false, "error": "..."}`; a client's mistake is a 4xx,
never a 500, and never costs the worker its life.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import time
from typing import Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import (
    ClientDisconnected,
    HTTPException,
    MethodNotAllowed,
    RequestEntityTooLarge,
)

from . import metrics
from .config import Settings
from .images import ImageError
from .service import ModelService, NotReady, Overloaded

log = logging.getLogger(__name__)

# gunicorn halts the whole server when a worker exits with this code (WORKER_BOOT_ERROR).
_WORKER_BOOT_ERROR = 3
_RETRY_AFTER_S = "5"  # while loading or draining
_OVERLOAD_RETRY_AFTER_S = "1"  # a queue drains in about a second on a warm model


class ClientError(Exception):
    """A request the server will not serve, with the status and message to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def create_app(settings: Settings | None = None, service: ModelService | None = None) -> Flask:
    """A Flask app serving `service` (by default one loading the model `settings` name)."""
    settings = settings or Settings.from_env()
    service = service or ModelService(settings)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes
    app.extensions["modelserver"] = service
    _register_routes(app, service)
    _register_errors(app, settings)
    _register_metrics(app)
    return app


def gunicorn_app() -> Flask:
    """The app gunicorn serves: a model that cannot load stops the whole server."""
    settings = Settings.from_env()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s",
    )

    def stop_server(error: Exception) -> None:
        logging.shutdown()
        os._exit(_WORKER_BOOT_ERROR)

    return create_app(settings, ModelService(settings, on_load_failure=stop_server))


def service_of(app: Flask) -> ModelService:
    service: ModelService = app.extensions["modelserver"]
    return service


def _register_routes(app: Flask, service: ModelService) -> None:
    settings = service.settings

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="alive")

    @app.get("/readyz")
    def readyz() -> tuple[Response, int, dict[str, str]]:
        if service.ready and service.overloaded:
            body = jsonify(status="overloaded", error="the request queue is full")
            return body, 503, {"Retry-After": _OVERLOAD_RETRY_AFTER_S}
        body = jsonify(status=service.state.value, error=service.failure)
        if service.ready:
            return body, 200, {}
        return body, 503, {"Retry-After": _RETRY_AFTER_S}

    @app.get("/metrics")
    def prometheus_metrics() -> Response:
        return Response(metrics.render(), mimetype="text/plain; version=0.0.4")

    @app.post("/predict")
    def predict() -> Response:
        if request.mimetype != "multipart/form-data":
            raise ClientError(415, "send the image as multipart/form-data in a field named 'image'")
        uploads = request.files.getlist("image")
        if not uploads:
            raise ClientError(400, "no 'image' field: send the image in a field named 'image'")
        top_k = _top_k(request.args.get("top_k") or request.form.get("top_k"), service)
        results = service.classify([upload.read() for upload in uploads], top_k)
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
        _require_model(name, settings)
        return jsonify(service.describe())

    @app.post("/v1/models/<name>:predict")
    def v1_predict(name: str) -> Response:
        _require_model(name, settings)
        top_k = _top_k(request.args.get("top_k"), service)
        uploads = _v1_instances(request.get_data())
        return jsonify(predictions=service.classify(uploads, top_k))

    @app.after_request
    def drain_unread_body(response: Response) -> Response:
        """Read what a refused request left unread, so its keep-alive connection stays usable.

        gunicorn drops a connection whose unread body is over 64 KiB after it has already
        answered "Connection: keep-alive"; the client's next request on it would then fail.
        """
        length = request.content_length
        if length and length <= (request.max_content_length or 0):
            try:
                while request.stream.read(64 * 1024):
                    pass
            except (OSError, ClientDisconnected):
                pass  # the client went away: nothing left to keep alive
        return response

    @app.before_request
    def allow_base64_overhead() -> None:
        """Base64 makes a JSON body 4/3 of its image: the limit is on the image bytes."""
        if request.path.endswith(":predict"):
            request.max_content_length = settings.max_upload_bytes * 4 // 3 + 64 * 1024


def _register_errors(app: Flask, settings: Settings) -> None:
    def error(status: int, message: str, headers: dict[str, str] | None = None) -> Any:
        return jsonify(success=False, error=message), status, headers or {}

    @app.errorhandler(ClientError)
    def client_error(exc: ClientError) -> Any:
        return error(exc.status, exc.message)

    @app.errorhandler(ImageError)
    def image_error(exc: ImageError) -> Any:
        return error(400, str(exc))

    @app.errorhandler(NotReady)
    def not_ready(exc: NotReady) -> Any:
        return error(503, f"not ready: {exc}", {"Retry-After": _RETRY_AFTER_S})

    @app.errorhandler(Overloaded)
    def overloaded(exc: Overloaded) -> Any:
        return error(503, str(exc), {"Retry-After": _OVERLOAD_RETRY_AFTER_S})

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(exc: RequestEntityTooLarge) -> Any:
        return error(413, f"the upload is over the limit of {settings.max_upload_bytes} bytes")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        headers = dict(exc.get_response().headers)
        allow = {"Allow": headers["Allow"]} if "Allow" in headers else None
        return error(exc.code or 500, f"{exc.name}: {exc.description}", allow)

    @app.errorhandler(Exception)
    def internal_error(exc: Exception) -> Any:
        log.exception("internal error on %s %s", request.method, request.path)
        return error(500, "internal server error (logged on the server)")


def _register_metrics(app: Flask) -> None:
    @app.before_request
    def start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def record(response: Response) -> Response:
        endpoint = _route_of(app)
        metrics.REQUESTS.labels(endpoint, request.method, str(response.status_code)).inc()
        started = g.get("started")
        if started is not None:
            metrics.LATENCY.labels(endpoint).observe(time.perf_counter() - started)
        return response


def _route_of(app: Flask) -> str:
    """The route a request was for, also when its method was wrong (a 405), so that metrics
    name it; `<unmatched>` only for paths no route has."""
    if request.url_rule is not None:
        return request.url_rule.rule
    refused = request.routing_exception
    if isinstance(refused, MethodNotAllowed) and refused.valid_methods:
        adapter = app.url_map.bind_to_environ(request.environ)
        rule, _ = adapter.match(method=next(iter(refused.valid_methods)), return_rule=True)
        return str(rule.rule)
    return "<unmatched>"


def _require_model(name: str, settings: Settings) -> None:
    if name != settings.served_name:
        raise ClientError(404, f"no model {name!r}: this server serves {settings.served_name!r}")


def _top_k(raw: str | None, service: ModelService) -> int:
    """`top_k` from the request (1 to the number of labels), or the server's default."""
    labels = len(service.classifier.labels)
    if raw is None or raw == "":
        return min(service.settings.top_k, labels)
    try:
        top_k = int(raw)
    except ValueError:
        raise ClientError(400, f"top_k must be a whole number, got {raw[:40]!r}") from None
    if not 1 <= top_k <= labels:
        raise ClientError(400, f"top_k must be between 1 and {labels}, got {top_k}")
    return top_k


def _v1_instances(body: bytes) -> list[bytes]:
    """The images of a TF Serving / KServe V1 request: `{"instances": [{"b64": ...}]}`."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise ClientError(400, "the body is not valid UTF-8 JSON") from None
    instances = document.get("instances") if isinstance(document, dict) else None
    if not isinstance(instances, list) or not instances:
        raise ClientError(400, 'expected {"instances": [{"b64": "<base64 image>"}, ...]}')
    return [_decode_instance(position, item) for position, item in enumerate(instances)]


def _decode_instance(position: int, instance: object) -> bytes:
    if isinstance(instance, dict) and isinstance(instance.get("image_bytes"), dict):
        instance = instance["image_bytes"]
    encoded = instance.get("b64") if isinstance(instance, dict) else None
    if not isinstance(encoded, str):
        raise ClientError(400, f'instance {position + 1}: expected {{"b64": "<base64 image>"}}')
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ClientError(400, f"instance {position + 1}: the b64 value is not base64") from None
