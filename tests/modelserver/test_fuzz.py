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

import grpc
import numpy as np
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from modelserver.protocol.grpc.messages import message_class
from oip_grpc import status_of
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
        if "/v2/" in answer.url:  # the Open Inference Protocol's form: {"error": "..."}
            assert list(body) == ["error"], body
        else:
            assert body["success"] is False
        assert isinstance(body["error"], str) and body["error"]
    else:  # JSON, or with the binary extension a JSON header and then the tensors
        assert answer.status_code == 200
        header = answer.headers.get("Inference-Header-Content-Length")
        assert json.loads(answer.content[: int(header)] if header else answer.content)


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
    # requests itself refuses a header value with leading whitespace: strip, so that every
    # drawn value reaches the server.
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60).map(str.strip),
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


def length_prefixed(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


# Half the images intact, so that the tensors around them are also tried on the happy path.
V2_IMAGES = st.one_of(encoded_images().map(lambda drawn: drawn[1] + SECRET), uploads())
V2_DATATYPES = st.sampled_from(["BYTES"] * 6 + ["UINT8", "FP32", "INT32", "", "bytes"])
V2_SHAPES = st.one_of(
    st.lists(st.integers(-2, 6), max_size=5),
    st.lists(st.integers(0, 40), min_size=4, max_size=4).map(lambda s: [min(s[0], 2), *s[1:]]),
    JSON_VALUES,
)
V2_OUTPUTS = st.lists(
    st.fixed_dictionaries(
        {"name": st.sampled_from(["probabilities", "probabilities", "logits", ""])},
        optional={
            "parameters": st.fixed_dictionaries(
                {},
                optional={
                    "classification": st.one_of(st.integers(-2, 1100), st.text(max_size=3)),
                    "binary_data": st.one_of(st.booleans(), JSON_LEAVES),
                },
            )
        },
    ),
    max_size=2,
)


@st.composite
def v2_requests(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    """Open Inference Protocol requests, JSON or with the binary extension: images good and
    bad, pixel tensors whose shape, datatype and data may disagree, random JSON and bytes."""
    kind = draw(st.sampled_from(["json", "json", "binary", "binary", "pixels", "random", "bytes"]))
    photos = draw(st.lists(V2_IMAGES, min_size=1, max_size=2))
    shape = [len(photos)] if draw(st.integers(0, 3)) else draw(V2_SHAPES)
    tensor: dict[str, Any] = {"name": "image", "datatype": draw(V2_DATATYPES), "shape": shape}
    outputs = draw(V2_OUTPUTS) if draw(st.booleans()) else []
    header: Any = {"inputs": [tensor], "outputs": outputs}
    if draw(st.booleans()):
        header["id"] = draw(JSON_LEAVES)
    binary = b""
    if kind == "json":
        tensor["data"] = [base64.b64encode(data).decode() for data in photos]
    elif kind == "binary":
        binary = length_prefixed(photos) if draw(st.booleans()) else photos[0]
        size = len(binary) if draw(st.integers(0, 3)) else draw(st.integers(-1, len(binary) + 9))
        tensor["parameters"] = {"binary_data_size": size}
    elif kind == "pixels":
        tensor["data"] = draw(st.lists(st.one_of(st.integers(-9, 300), st.floats()), max_size=60))
    elif kind == "random":
        header = draw(JSON_VALUES)
    if kind == "bytes":
        noise = draw(st.binary(max_size=256)) + SECRET
        return noise, {"Inference-Header-Content-Length": str(draw(st.integers(-1, 300)))}
    text = json.dumps(header).encode()
    declared = len(text) if draw(st.integers(0, 3)) else draw(st.integers(-1, len(text) + 9))
    if kind == "binary" or draw(st.booleans()):
        return text + binary, {"Inference-Header-Content-Length": str(declared)}
    return text, {}


def test_v2_requests(mobilenet_server: RunningServer, mobilenet_file: Path) -> None:
    path = f"/v2/models/{mobilenet_file.stem}/infer"

    def send(url: str, request: tuple[bytes, dict[str, str]]) -> Any:
        body, headers = request
        return requests.post(url + path, data=body, headers=headers, timeout=60)

    statuses = fuzz(mobilenet_server, send, v2_requests())
    assert statuses[200] and statuses[400], statuses  # both paths were exercised


@st.composite
def grpc_inputs(draw: st.DrawFn) -> dict[str, Any]:
    """ModelInfer requests: images raw or typed, shapes and datatypes that may disagree."""
    photos = draw(st.lists(V2_IMAGES, min_size=1, max_size=2))
    datatype = draw(V2_DATATYPES)
    shape = (
        [len(photos)] if draw(st.integers(0, 3)) else draw(st.lists(st.integers(-2, 6), max_size=5))
    )
    tensor: dict[str, Any] = {"name": "image", "datatype": datatype, "shape": shape}
    request: dict[str, Any] = {"inputs": [tensor], "id": draw(st.text(max_size=8))}
    form = draw(st.sampled_from(["raw", "raw-unprefixed", "bytes", "numbers"]))
    if form == "raw":
        request["raw_input_contents"] = [length_prefixed(photos)]
    elif form == "raw-unprefixed":
        request["raw_input_contents"] = [photos[0]]
    elif form == "bytes":
        tensor["contents"] = {"bytes_contents": photos}
    else:
        values = draw(st.lists(st.integers(0, 2**32 - 1), max_size=48))
        tensor["contents"] = {"uint_contents": values}
    if draw(st.booleans()):
        k = draw(st.integers(-2, 1100))
        parameters = {"classification": message_class("InferParameter")(int64_param=k)}
        request["outputs"] = [
            {"name": draw(st.sampled_from(["probabilities", "x"])), "parameters": parameters}
        ]
    return request


def test_grpc_model_infer(mobilenet_server: RunningServer, mobilenet_file: Path) -> None:
    """The same property over gRPC: OK, or a client's status code whose message echoes
    nothing sent; never INTERNAL or UNKNOWN; the worker lives."""
    statuses: Counter[str] = Counter()
    allowed = {"OK", "INVALID_ARGUMENT", "NOT_FOUND"}
    with grpc.insecure_channel(mobilenet_server.grpc_target) as channel:

        @FUZZ
        @given(grpc_inputs())
        def one_call(request: dict[str, Any]) -> None:
            code, message = status_of(
                channel, "ModelInfer", model_name=mobilenet_file.stem, **request
            )
            statuses[code.name] += 1
            assert code.name in allowed, message
            assert SECRET.decode() not in message and "Traceback" not in message

        one_call()
        assert status_of(channel, "ServerReady") == (grpc.StatusCode.OK, "")
    assert mobilenet_server.worker_boots() == 1, mobilenet_server.log_tail()
    print(f"{sum(statuses.values())} calls: {dict(sorted(statuses.items()))}")
    assert statuses["OK"] and statuses["INVALID_ARGUMENT"], statuses
