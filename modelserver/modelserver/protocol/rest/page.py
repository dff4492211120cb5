"""The page for people at `/`: try the classifier in a browser, and watch how the server is
doing (`/stats`, see `stats`). It classifies through `/predict` and describes the model with
`/v1/models/<name>`, so it adds no API of its own beyond its live figures.

Its HTML, script and style ship in the package (`modelserver/page/`) and load from this server
only: it works air-gapped, and its Content-Security-Policy allows no inline script, no eval and
nothing from elsewhere, so that a label or filename that got through unescaped still could not
run (the script writes them as text only).
"""

from __future__ import annotations

import html
from pathlib import Path

from flask import Flask, Response, jsonify, redirect, request, send_from_directory
from werkzeug.exceptions import NotFound
from werkzeug.wrappers import Response as BaseResponse

from ... import stats
from ..dataplane import DataPlane

PAGE_DIR = Path(__file__).resolve().parents[2] / "page"
ASSETS = frozenset({"page.js", "page.css", "icon.svg"})
SECURITY_HEADERS = {
    "Content-Security-Policy": "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' blob:",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
MODEL_PLACEHOLDER = "{{model}}"


def register(app: Flask, plane: DataPlane) -> None:
    index = (PAGE_DIR / "index.html").read_text()
    history = stats.history()

    @app.get("/")
    def page() -> Response:
        body = index.replace(MODEL_PLACEHOLDER, html.escape(plane.model_name, quote=True))
        return _secured(Response(body, mimetype="text/html"))

    @app.get("/page/<name>")
    def asset(name: str) -> Response:
        if name not in ASSETS:
            raise NotFound(f"the page has no file {name[:60]!r}")
        return _secured(send_from_directory(PAGE_DIR, name))

    @app.get("/stats")
    def live_figures() -> Response:
        return _secured(jsonify(history.report()))

    @app.before_request
    def page_for_browsers() -> BaseResponse | None:
        """`status.url` names `/predict`: a browser opening it is shown the page (303 to `./`,
        relative, as behind a proxy's path prefix). Clients that do not ask for HTML first
        still get the 405 that says to POST."""
        wants = request.accept_mimetypes.best_match(["application/json", "text/html"])
        if request.method == "GET" and request.path == "/predict" and wants == "text/html":
            return redirect("./", 303)
        return None


def _secured(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response
