"""Property-based fuzzing of the real gunicorn server: whatever the body, the answer is a 2xx or
a 4xx with a JSON error that echoes neither the upload nor a stack trace, and the worker lives.

Each test tries FUZZ_EXAMPLES inputs (default 150; set it higher for a longer hunt).
"""

from __future__ import annotations

import base64
import io
import json
import os
import struct
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from serving import RunningServer

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # real HTTP to a real model: timing is not the property
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Appended to every upload: an error message must never contain it.
SECRET = b"KUBECLASSIFY-SECRET-7f3a9c"

# Pillow modes each format can write.
MODES = {
    "JPEG": ("L", "RGB", "CMYK"),
    "PNG": ("1", "L", "LA", "P", "RGB", "RGBA", "I;16"),
    "GIF": ("L", "P"),
    "WEBP": ("RGB", "RGBA"),
    "BMP": ("1", "L", "P", "RGB"),
    "TIFF": ("1", "L", "RGB", "CMYK", "I;16", "F"),
}
ANIMATED = {"PNG", "GIF", "WEBP"}


def random_frame(rng: np.random.Generator, mode: str, size: tuple[int, int]) -> Image.Image:
    width, height = size
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    if mode == "F":
        return Image.fromarray(rng.normal(0, 1000, (height, width)).astype(np.float32))
    rgb = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    return rgb.convert(mode)


@st.composite
def encoded_images(draw: st.DrawFn) -> tuple[str, bytes]:
    """A real image in a random format, mode, size and frame count: (format, bytes)."""
    fmt = draw(st.sampled_from(sorted(MODES)))
    mode = draw(st.sampled_from(MODES[fmt]))
    size = (draw(st.integers(1, 96)), draw(st.integers(1, 96)))
    frames = draw(st.integers(1, 3)) if fmt in ANIMATED else 1
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    images = [random_frame(rng, mode, size) for _ in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, format=fmt, save_all=frames > 1, append_images=images[1:])
    return fmt, buffer.getvalue()


def declare_size(fmt: str, data: bytes, width: int, height: int) -> bytes:
    """The same file with its header claiming another size (CRC fixed, so only size is wrong)."""
    if fmt == "PNG" and len(data) >= 33:
        ihdr = b"IHDR" + struct.pack(">II", width, height) + data[24:29]
        return data[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + data[33:]
    if fmt == "GIF" and len(data) >= 10:
        return data[:6] + struct.pack("<HH", width % 65536, height % 65536) + data[10:]
    if fmt == "BMP" and len(data) >= 26:
        return data[:18] + struct.pack("<ii", width, height) + data[26:]
    return data


@st.composite
def uploads(draw: st.DrawFn) -> bytes:
    """An image, intact or mutated the ways files break and attackers try."""
    fmt, data = draw(encoded_images())
    mutation = draw(
        st.sampled_from(["intact", "truncate", "flip", "splice", "declare", "empty", "noise"])
    )
    if mutation == "truncate":
        data = data[: draw(st.integers(0, max(0, len(data) - 1)))]
    elif mutation == "flip" and data:
        position = draw(st.integers(0, len(data) - 1))
        data = (
            data[:position]
            + bytes([data[position] ^ draw(st.integers(1, 255))])
            + data[position + 1 :]
        )
    elif mutation == "splice":
        position = draw(st.integers(0, len(data)))
        data = data[:position] + draw(st.binary(max_size=64)) + data[position:]
    elif mutation == "declare":
        side = st.integers(0, 2**31 - 1)
        data = declare_size(fmt, data, draw(side), draw(side))
    elif mutation == "empty":
        return b""
    elif mutation == "noise":
        data = data[:8] + draw(st.binary(max_size=512))
    return data + SECRET


def check(answer: requests.Response) -> None:
    """The property every answer must have."""
    assert answer.status_code < 500, answer.text
    assert "Traceback" not in answer.text
    assert SECRET.decode() not in answer.text
    if answer.status_code >= 400:
        body = answer.json()
        assert body["success"] is False and isinstance(body["error"], str) and body["error"]
    else:
        assert answer.status_code == 200 and answer.json()


def fuzz(
    server: RunningServer, send: Callable[..., requests.Response], *strategies: Any
) -> Counter[int]:
    """Run `send(url, *drawn)` on every example, checking each answer; how often each status."""
    boots = server.worker_boots()
    statuses: Counter[int] = Counter()

    @FUZZ
    @given(st.tuples(*strategies))
    def one_input(drawn: tuple[Any, ...]) -> None:
        answer = send(server.url, *drawn)
        statuses[answer.status_code] += 1
        check(answer)

    one_input()
    assert server.process.poll() is None and server.worker_boots() == boots, server.log_tail()
    assert requests.get(server.url + "/readyz", timeout=30).status_code == 200
    print(f"{sum(statuses.values())} inputs: {dict(sorted(statuses.items()))}")
    return statuses


@pytest.fixture(params=["mobilenet_server", "resnet_server"])
def any_server(request: pytest.FixtureRequest) -> RunningServer:
    """The TFLite and the Keras model paths decode and prepare images differently."""
    server: RunningServer = request.getfixturevalue(request.param)
    return server


FIELD_NAMES = st.sampled_from(["image", "image", "image", "file", "", "imäge"])
FILE_NAMES = st.text(max_size=40)


def test_multipart_uploads(any_server: RunningServer) -> None:
    def send(url: str, images: list[bytes], field: str, name: str, top_k: str) -> Any:
        files = [(field, (name, data)) for data in images]
        return requests.post(f"{url}/predict", files=files, params={"top_k": top_k}, timeout=60)

    top_k = st.one_of(st.just(""), st.integers(-2, 1002).map(str), st.text(max_size=8))
    statuses = fuzz(
        any_server,
        send,
        st.lists(uploads(), min_size=1, max_size=3),
        FIELD_NAMES,
        FILE_NAMES,
        top_k,
    )
    assert statuses[200] and statuses[400], statuses  # both paths were exercised


@st.composite
def multipart_bodies(draw: st.DrawFn) -> tuple[str, bytes]:
    """Hand-framed multipart: boundaries missing, wrong, unterminated, or parts without headers."""
    boundary = draw(st.text("abcXYZ019-_'()+,./:=?", min_size=1, max_size=72))
    declared = draw(st.sampled_from([boundary, boundary + "x", "", f'"{boundary}"']))
    content_type = draw(
        st.sampled_from(
            [
                f"multipart/form-data; boundary={declared}",
                "multipart/form-data",
                f"multipart/mixed; boundary={declared}",
                f"multipart/form-data; boundary={declared}; charset=\xff",
            ]
        )
    )
    body = b""
    for data in draw(st.lists(uploads(), max_size=3)):
        header = draw(
            st.sampled_from(
                [
                    b'Content-Disposition: form-data; name="image"; filename="a.jpg"\r\n',
                    b'Content-Disposition: form-data; name="image"\r\n',
                    b"Content-Disposition: attachment\r\n",
                    b"\r\n",
                    b"",
                ]
            )
        )
        body += b"--" + boundary.encode() + b"\r\n" + header + b"\r\n" + data + b"\r\n"
    if draw(st.booleans()):
        body += b"--" + boundary.encode() + b"--\r\n"
    body = body[: draw(st.integers(0, len(body)))] if draw(st.booleans()) else body
    return content_type, body


def test_multipart_framing(mobilenet_server: RunningServer) -> None:
    def send(url: str, framed: tuple[str, bytes]) -> Any:
        content_type, body = framed
        return requests.post(
            f"{url}/predict", data=body, headers={"Content-Type": content_type}, timeout=60
        )

    fuzz(mobilenet_server, send, multipart_bodies())


CONTENT_TYPES = st.one_of(
    st.sampled_from(
        [
            "image/jpeg",
            "application/octet-stream",
            "application/json",
            "text/plain; charset=utf-8",
            "application/x-www-form-urlencoded",
            "",
        ]
    ),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60),
)


def test_raw_bodies_with_any_content_type(
    mobilenet_server: RunningServer, mobilenet_file: Path
) -> None:
    def send(url: str, data: bytes, content_type: str, path: str) -> Any:
        return requests.post(
            url + path, data=data, headers={"Content-Type": content_type}, timeout=60
        )

    paths = st.sampled_from(["/predict", f"/v1/models/{mobilenet_file.stem}:predict"])
    fuzz(mobilenet_server, send, uploads(), CONTENT_TYPES, paths)


JSON_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["instances", "b64", "image_bytes", "x"]), children, max_size=4
        )
    ),
    max_leaves=20,
)


@st.composite
def v1_bodies(draw: st.DrawFn) -> bytes:
    """KServe V1 bodies: good and bad base64 images, random JSON, deep nesting, non-UTF-8."""
    kind = draw(st.sampled_from(["images", "json", "deep", "bytes"]))
    if kind == "images":
        instances = [
            draw(
                st.sampled_from(
                    [
                        {"b64": base64.b64encode(data).decode()},
                        {"image_bytes": {"b64": base64.b64encode(data).decode()}},
                        {"b64": base64.b64encode(data).decode()[:-3] + "%"},
                    ]
                )
            )
            for data in draw(st.lists(uploads(), max_size=3))
        ]
        return json.dumps({"instances": instances}).encode()
    if kind == "json":
        return json.dumps(draw(JSON_VALUES)).encode()
    if kind == "deep":
        depth = draw(st.integers(1, 200_000))
        return b'{"instances": ' + b"[" * depth + b"]" * depth + b"}"
    return draw(st.binary(max_size=256)) + SECRET


def test_v1_json_bodies(mobilenet_server: RunningServer, mobilenet_file: Path) -> None:
    path = f"/v1/models/{mobilenet_file.stem}:predict"

    def send(url: str, body: bytes) -> Any:
        return requests.post(
            url + path, data=body, headers={"Content-Type": "application/json"}, timeout=60
        )

    fuzz(mobilenet_server, send, v1_bodies())
