"""HTTP answers every REST protocol shapes alike: probe statuses and errors."""

from __future__ import annotations

from typing import Any

from flask import jsonify, request


def status_and_headers(ready: bool, retry_after_s: int | None) -> tuple[int, dict[str, str]]:
    """200, or 503 with the Retry-After of why not (the probes of every protocol)."""
    if ready:
        return 200, {}
    return 503, {"Retry-After": str(retry_after_s)} if retry_after_s else {}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Any:
    """An error in the form of the protocol the path belongs to."""
    if request.path.startswith("/v2"):
        return jsonify(error=message), status, headers or {}
    return jsonify(success=False, error=message), status, headers or {}
