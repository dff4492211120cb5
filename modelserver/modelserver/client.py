"""A small HTTP client for `/predict`, with only the standard library."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any


class PredictError(RuntimeError):
    """The server answered with an error (its message is kept) or could not be reached."""


def predict_files(
    url: str, paths: list[Path], top_k: int | None = None, timeout_s: float = 60.0
) -> list[list[dict[str, Any]]]:
    """Top predictions for each file, in order, from one multipart request to `url`."""
    boundary = uuid.uuid4().hex
    body = b"".join(_part(boundary, path) for path in paths) + f"--{boundary}--\r\n".encode()
    query = f"?top_k={top_k}" if top_k else ""
    request = urllib.request.Request(
        url + query,
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as error:
        raise PredictError(f"HTTP {error.code}: {_error_message(error)}") from None
    except (urllib.error.URLError, OSError) as error:
        raise PredictError(f"cannot reach {url}: {error}") from None
    if "results" in answer:
        return [result["predictions"] for result in answer["results"]]
    return [answer["predictions"]]


def _part(boundary: str, path: Path) -> bytes:
    header = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="image"; filename="{path.name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    )
    return header.encode() + path.read_bytes() + b"\r\n"


def _error_message(error: urllib.error.HTTPError) -> str:
    try:
        return str(json.load(error)["error"])
    except (ValueError, KeyError, TypeError):
        return error.reason
