"""Every client mistake gets its 4xx and a JSON message from the real gunicorn server,
and the worker lives on to answer the next good request."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image
from serving import EXPECTED_TOP1, RunningServer


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def gif_header(width: int, height: int) -> bytes:
    """A GIF that declares `width` x `height` and holds one pixel's worth of data."""
    screen = width.to_bytes(2, "little") + height.to_bytes(2, "little")
    image = b",\x00\x00\x00\x00" + screen + b"\x00\x02\x02\x44\x01\x00;"
    return b"GIF89a" + screen + b"\x80\x00\x00" + b"\x00" * 6 + image


def corrupt_middle(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 64]) + data[middle + 64 :]


def upload(data: bytes, name: str = "photo.jpg", field: str = "image") -> dict[str, Any]:
    return {"files": {field: (name, data)}}


def v1(body: Any) -> dict[str, Any]:
    raw = body if isinstance(body, bytes) else None
    return {"data": raw} if raw is not None else {"json": body}


# (id, method, path, request kwargs (a function of the photo bytes), status, words in the error)
CASES: list[tuple[str, str, str, Any, int, str]] = [
    ("no image field", "POST", "/predict", lambda d: upload(d, field="file"), 400, "'image'"),
    ("empty file", "POST", "/predict", lambda d: upload(b""), 400, "empty"),
    (
        "not an image",
        "POST",
        "/predict",
        lambda d: upload(b"hello, world\n" * 50),
        400,
        "not an image",
    ),
    ("truncated jpeg", "POST", "/predict", lambda d: upload(d[: len(d) // 3]), 400, "truncated"),
    (
        "corrupt png",
        "POST",
        "/predict",
        lambda d: upload(corrupt_middle(png(Image.open(io.BytesIO(d))))),
        400,
        "corrupt",
    ),
    (
        "decompression bomb",
        "POST",
        "/predict",
        lambda d: upload(png(Image.new("1", (10000, 10000)))),
        400,
        "dimensions, 10000x10000",
    ),
    (
        "absurd dimensions",
        "POST",
        "/predict",
        lambda d: upload(gif_header(65535, 65535)),
        400,
        "dimensions",
    ),
    ("zero width", "POST", "/predict", lambda d: upload(gif_header(0, 10)), 400, "image"),
    ("top_k zero", "POST", "/predict?top_k=0", lambda d: upload(d), 400, "top_k"),
    ("top_k too big", "POST", "/predict?top_k=5000", lambda d: upload(d), 400, "top_k"),
    ("top_k not a number", "POST", "/predict?top_k=many", lambda d: upload(d), 400, "top_k"),
    ("wrong method", "GET", "/predict", lambda d: {}, 405, "Method Not Allowed"),
    (
        "raw body, not multipart",
        "POST",
        "/predict",
        lambda d: {"data": d, "headers": {"Content-Type": "image/jpeg"}},
        415,
        "multipart",
    ),
    (
        "body over the limit",
        "POST",
        "/predict",
        lambda d: upload(b"\xff" * (3 * 1024 * 1024)),
        413,
        "limit",
    ),
    ("unknown path", "GET", "/classify", lambda d: {}, 404, "Not Found"),
    ("v1: not json", "POST", "/v1/models/{model}:predict", lambda d: v1(b"\xff\xfe{"), 400, "JSON"),
    (
        "v1: deep json",
        "POST",
        "/v1/models/{model}:predict",
        lambda d: v1(b"[" * 100000 + b"]" * 100000),
        400,
        "JSON",
    ),
    (
        "v1: no instances",
        "POST",
        "/v1/models/{model}:predict",
        lambda d: v1({"inputs": []}),
        400,
        "instances",
    ),
    (
        "v1: instance not b64",
        "POST",
        "/v1/models/{model}:predict",
        lambda d: v1({"instances": [[1, 2, 3]]}),
        400,
        "instance 1",
    ),
    (
        "v1: bad base64",
        "POST",
        "/v1/models/{model}:predict",
        lambda d: v1({"instances": [{"b64": "%%%"}]}),
        400,
        "base64",
    ),
    (
        "v1: bad image",
        "POST",
        "/v1/models/{model}:predict",
        lambda d: v1({"instances": [{"b64": base64.b64encode(d).decode()}, {"b64": "aGVsbG8="}]}),
        400,
        "image 2 of 2",
    ),
    (
        "v1: unknown model",
        "POST",
        "/v1/models/vgg16:predict",
        lambda d: v1({"instances": []}),
        404,
        "vgg16",
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "make_request", "status", "words"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_a_bad_request_gets_a_clear_error(
    mobilenet_server: RunningServer,
    images_dir: Path,
    mobilenet_file: Path,
    method: str,
    path: str,
    make_request: Any,
    status: int,
    words: str,
) -> None:
    photo = (images_dir / "dog.jpg").read_bytes()
    url = mobilenet_server.url + path.format(model=mobilenet_file.stem)
    answer = requests.request(method, url, timeout=30, **make_request(photo))
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["success"] is False
    assert words in body["error"]
    assert "Traceback" not in body["error"]


def test_the_worker_survives_every_bad_request(
    mobilenet_server: RunningServer, images_dir: Path
) -> None:
    """Runs after the table above: the same worker still classifies correctly."""
    answer = mobilenet_server.predict(images_dir / "dog.jpg")
    assert answer.status_code == 200
    assert answer.json()["predictions"][0]["label"] == "beagle"
    assert mobilenet_server.worker_boots() == 1
    errors = requests.get(mobilenet_server.url + "/metrics", timeout=10).text
    assert 'code="500"' not in errors


def test_405_says_which_methods_are_allowed(mobilenet_server: RunningServer) -> None:
    answer = requests.get(mobilenet_server.url + "/predict", timeout=10)
    assert "POST" in answer.headers["Allow"]
    metrics = requests.get(mobilenet_server.url + "/metrics", timeout=10).text
    assert 'endpoint="/predict",method="GET"' in metrics  # counted under its route
    requests.get(mobilenet_server.url + "/no-such-path", timeout=10)
    metrics = requests.get(mobilenet_server.url + "/metrics", timeout=10).text
    assert 'endpoint="<unmatched>",method="GET"' in metrics


def test_a_refused_body_leaves_the_keep_alive_connection_usable(
    mobilenet_server: RunningServer,
    images_dir: Path,
    mobilenet_file: Path,
    mobilenet_labels: Path,
) -> None:
    """Bodies over gunicorn's 64 KiB drain are refused unread; the next request still works."""
    photo = (images_dir / "bmw.png").read_bytes()
    assert len(photo) > 64 * 1024
    url = mobilenet_server.url
    with requests.Session() as session:
        raw = session.post(url + "/predict", data=photo, timeout=30)
        unknown = session.post(url + "/v1/models/vgg16:predict", data=photo, timeout=30)
        bad_top_k = session.post(
            f"{url}/v1/models/{mobilenet_file.stem}:predict?top_k=0", data=photo, timeout=30
        )
        good = session.post(url + "/predict", files={"image": photo}, timeout=30)
    assert (raw.status_code, unknown.status_code, bad_top_k.status_code) == (415, 404, 400)
    label = mobilenet_labels.read_text().splitlines()[EXPECTED_TOP1["bmw.png"] + 1]
    assert good.status_code == 200 and good.json()["predictions"][0]["label"] == label
