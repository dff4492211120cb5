"""The Flask app around the data plane: probes, metrics, errors, body limits.

Every error is JSON: `{"error": "..."}` on the Open Inference Protocol's `/v2` paths,
`{"success": false, "error": "..."}` elsewhere (the tutorial's form). A client's mistake is
a 4xx, never a 500, and never costs the worker its life.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge

from ... import metrics
from ..dataplane import DataPlane, observe_request
from ..errors import (
    NOT_READY_RETRY_AFTER_S,
    OVERLOADED_RETRY_AFTER_S,
    InferenceError,
    InvalidInput,
    ModelNotFound,
    NotReady,
    Overloaded,
    UnsupportedMediaType,
)
from . import page, v1_endpoints, v2_endpoints
from .responses import error_response, status_and_headers

log = logging.getLogger(__name__)

HTTP_STATUS: dict[type[InferenceError], int] = {
    UnsupportedMediaType: 415,
    InvalidInput: 400,
    ModelNotFound: 404,
    NotReady: 503,
    Overloaded: 503,
}
# A body over the limit is still read (and dropped) up to this many times the limit before
# the connection is closed: a client that sends it all before reading, as Python's urllib
# does, would otherwise meet a reset instead of the 413.
_DRAIN_FACTOR = 4
_CHUNK = 64 * 1024


def create_app(plane: DataPlane) -> Flask:
    """A Flask app serving `plane` over every REST protocol."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = plane.raw_body_limit
    app.extensions["modelserver"] = plane
    _register_probes(app, plane)
    v1_endpoints.register(app, plane)
    v2_endpoints.register(app, plane)
    _register_errors(app, plane)
    _register_metrics(app)
    _register_draining(app, plane)
    if plane.settings.page:
        page.register(app, plane)
    return app


def _register_probes(app: Flask, plane: DataPlane) -> None:
    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="alive")

    @app.get("/readyz")
    def readyz() -> tuple[Response, int, dict[str, str]]:
        readiness = plane.readiness()
        body = jsonify(status=readiness.status, error=readiness.error)
        return body, *status_and_headers(readiness.ready, readiness.retry_after_s)

    @app.get("/metrics")
    def prometheus_metrics() -> Response:
        return Response(metrics.render(), mimetype="text/plain; version=0.0.4")


def _register_errors(app: Flask, plane: DataPlane) -> None:
    @app.errorhandler(InferenceError)
    def inference_error(exc: InferenceError) -> Any:
        status = next(HTTP_STATUS[kind] for kind in type(exc).__mro__ if kind in HTTP_STATUS)
        if isinstance(exc, NotReady):
            return error_response(status, f"not ready: {exc.message}", _retry(exc))
        return error_response(status, exc.message, _retry(exc))

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(exc: RequestEntityTooLarge) -> Any:
        limit = request.max_content_length or plane.raw_body_limit
        return error_response(413, f"the upload is over the limit of {limit} bytes")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        headers = dict(exc.get_response().headers)
        allow = {"Allow": headers["Allow"]} if "Allow" in headers else None
        return error_response(exc.code or 500, f"{exc.name}: {exc.description}", allow)

    @app.errorhandler(Exception)
    def internal_error(exc: Exception) -> Any:
        log.exception("internal error on %s %s", request.method, request.path)
        return error_response(500, "internal server error (logged on the server)")


def _retry(exc: InferenceError) -> dict[str, str] | None:
    if isinstance(exc, NotReady):
        return {"Retry-After": str(NOT_READY_RETRY_AFTER_S)}
    if isinstance(exc, Overloaded):
        return {"Retry-After": str(OVERLOADED_RETRY_AFTER_S)}
    return None


def _register_metrics(app: Flask) -> None:
    @app.before_request
    def start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def record(response: Response) -> Response:
        seconds = time.perf_counter() - g.get("started", time.perf_counter())
        observe_request(_route_of(app), request.method, str(response.status_code), seconds)
        # The server's share of the latency a client sees (the page shows it beside its own).
        response.headers["Server-Timing"] = f"app;dur={seconds * 1000:.1f}"
        return response


def _register_draining(app: Flask, plane: DataPlane) -> None:
    @app.after_request
    def drain_unread_body(response: Response) -> Response:
        """Read what a refused request left unread, so that the client reads the answer and
        its keep-alive connection stays usable.

        gunicorn drops a connection whose unread body is over 64 KiB after it has already
        answered "Connection: keep-alive"; a client still sending would meet a reset. A body
        over the limit is read too, up to `_DRAIN_FACTOR` times the limit: past that the
        connection is closed rather than read for ever."""
        budget = _DRAIN_FACTOR * plane.json_body_limit
        if (request.content_length or 0) > budget:
            response.headers["Connection"] = "close"
            return response
        # gunicorn ends wsgi.input with the body. Other servers (werkzeug's, `flask run`) hand
        # over the socket itself, which would wait for the client's next request: there the
        # stream werkzeug bounds by Content-Length is read instead.
        terminated = "wsgi.input_terminated" in request.environ
        try:
            body = request.environ["wsgi.input"] if terminated else request.stream
            while budget > 0 and (chunk := body.read(min(_CHUNK, budget))):
                budget -= len(chunk)
        except Exception:  # the client went away or broke its framing: close
            budget = 0
        if budget <= 0:
            response.headers["Connection"] = "close"
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
