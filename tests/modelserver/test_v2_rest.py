"""The Open Inference Protocol (KServe V2) over REST, against the real gunicorn server and
MobileNetV2: health and metadata, JSON and binary tensors, pixels, the classification
extension; every bad request its exact code and `{"error": ...}`; one batcher for all."""

from __future__ import annotations

import base64
import json
import re
import struct
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import requests
from modelserver.config import Settings
from oip_grpc import call
from PIL import Image
from serving import InProcessServer, RunningServer, serve_held

HEADER = "Inference-Header-Content-Length"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def jpeg_input(*photos: bytes) -> dict[str, Any]:
    return {
        "name": "image",
        "datatype": "BYTES",
        "shape": [len(photos)],
        "data": [b64(p) for p in photos],
    }


def binary_body(header: dict[str, Any], *raw: bytes) -> dict[str, Any]:
    """requests kwargs for the binary tensor data extension."""
    text = json.dumps(header).encode()
    return {"data": text + b"".join(raw), "headers": {HEADER: str(len(text))}}


def length_prefixed(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def split_binary(answer: requests.Response) -> tuple[dict[str, Any], bytes]:
    length = int(answer.headers[HEADER])
    header: dict[str, Any] = json.loads(answer.content[:length])
    return header, answer.content[length:]


@pytest.fixture(scope="module")
def infer_url(mobilenet_server: RunningServer, mobilenet_file: Path) -> str:
    return f"{mobilenet_server.url}/v2/models/{mobilenet_file.stem}/infer"


@pytest.fixture(scope="module")
def labels(mobilenet_labels: Path) -> list[str]:
    return mobilenet_labels.read_text().splitlines()


def test_health_and_metadata(mobilenet_server: RunningServer, mobilenet_file: Path) -> None:
    url, name = mobilenet_server.url, mobilenet_file.stem
    assert requests.get(f"{url}/v2", timeout=10).json() == {
        "name": "kubeclassify-modelserver",
        "version": "0.1.0",
        "extensions": ["binary_tensor_data", "classification"],
    }
    assert requests.get(f"{url}/v2/health/live", timeout=10).json() == {"live": True}
    assert requests.get(f"{url}/v2/health/ready", timeout=10).status_code == 200
    for path in (f"/v2/models/{name}", f"/v2/models/{name}/versions/1"):
        metadata = requests.get(url + path, timeout=10).json()
        assert metadata["name"] == name and metadata["versions"] == ["1"]
        assert metadata["inputs"][1] == {
            "name": "pixels",
            "datatype": "FP32",
            "shape": [-1, 224, 224, 3],
        }
        assert metadata["outputs"] == [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 1001]}
        ]
        ready = requests.get(f"{url}{path}/ready", timeout=10)
        assert (ready.status_code, ready.json()) == (200, {"name": name, "ready": True})


def test_json_images_give_the_probabilities_in_order_with_the_id_echoed(
    infer_url: str, images_dir: Path, labels: list[str]
) -> None:
    photos = [(images_dir / p).read_bytes() for p in ("dog.jpg", "soccer_ball.jpg")]
    answer = requests.post(
        infer_url, json={"id": "abc-1", "inputs": [jpeg_input(*photos)]}, timeout=60
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["id"] == "abc-1" and body["model_version"] == "1"
    [output] = body["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == (
        "probabilities",
        "FP32",
        [2, 1001],
    )
    probabilities = np.array(output["data"]).reshape(2, 1001)
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-3)
    assert [labels[i] for i in probabilities.argmax(axis=1)] == ["beagle", "soccer ball"]


def test_binary_in_and_out_with_the_classification_extension(
    infer_url: str, images_dir: Path
) -> None:
    dog = (images_dir / "dog.jpg").read_bytes()
    raw = length_prefixed(dog)
    header = {
        "inputs": [
            {
                "name": "image",
                "datatype": "BYTES",
                "shape": [1],
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        "outputs": [
            {"name": "probabilities", "parameters": {"binary_data": True}},
            {"name": "probabilities", "parameters": {"classification": 2, "binary_data": False}},
        ],
    }
    answer = requests.post(infer_url, timeout=60, **binary_body(header, raw))
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "application/octet-stream"
    body, data = split_binary(answer)
    probabilities, classes = body["outputs"]
    assert (
        probabilities["parameters"]
        == {"binary_data_size": 1001 * 4}
        == {"binary_data_size": len(data)}
    )
    assert int(np.frombuffer(data, "<f4").argmax()) == 163
    assert (classes["datatype"], classes["shape"]) == ("BYTES", [1, 2])
    score, index, label = classes["data"][0].split(":")
    assert (index, label) == ("163", "beagle") and float(score) > 0.5


def test_pixels_of_any_size_are_resized(infer_url: str, images_dir: Path) -> None:
    """UINT8 pixels in JSON at 160 x 120, and FP32 raw at 300 x 200: both the dog."""
    photo = Image.open(images_dir / "dog.jpg").convert("RGB")
    small = np.asarray(photo.resize((160, 120)), dtype=np.uint8)[None]
    as_json = {
        "name": "pixels",
        "datatype": "UINT8",
        "shape": list(small.shape),
        "data": small.ravel().tolist(),
    }
    wanted = {"outputs": [{"name": "probabilities", "parameters": {"classification": 1}}]}
    answer = requests.post(infer_url, json={"inputs": [as_json], **wanted}, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"][0].endswith(":beagle")

    larger = np.asarray(photo.resize((300, 200)), dtype=np.float32)[None]
    header = {
        "inputs": [
            {
                "name": "pixels",
                "datatype": "FP32",
                "shape": list(larger.shape),
                "parameters": {"binary_data_size": larger.nbytes},
            }
        ],
        "parameters": {"binary_data_output": True},
    }
    answer = requests.post(infer_url, timeout=60, **binary_body(header, larger.tobytes()))
    assert answer.status_code == 200, answer.text
    _, data = split_binary(answer)
    assert int(np.frombuffer(data, "<f4").argmax()) == 163


def bad(body: Any) -> dict[str, Any]:
    return {"data": body} if isinstance(body, bytes) else {"json": body}


def one_input(datatype: str, shape: Any, data: Any) -> dict[str, Any]:
    return bad({"inputs": [{"name": "x", "datatype": datatype, "shape": shape, "data": data}]})


def raw_input(datatype: str, size: int, *raw: bytes) -> dict[str, Any]:
    tensor = {"name": "x", "datatype": datatype, "shape": [1]}
    return binary_body({"inputs": [{**tensor, "parameters": {"binary_data_size": size}}]}, *raw)


def with_output(name: str, **parameters: Any) -> dict[str, Any]:
    return bad(
        {"inputs": [jpeg_input(b"a")], "outputs": [{"name": name, "parameters": parameters}]}
    )


NAN = b'{"inputs": [{"name": "p", "datatype": "FP32", "shape": [1, 1, 1, 3], "data": [NaN, 1, 2]}]}'
INFER = "/v2/models/{model}/infer"
# (id, method, path, request kwargs, status, words in the error)
CASES: list[tuple[str, str, str, dict[str, Any], int, str]] = [
    ("not json", "POST", INFER, bad(b"{nope"), 400, "not valid UTF-8 JSON"),
    ("not an object", "POST", INFER, bad([1, 2]), 400, "inference request"),
    ("no inputs", "POST", INFER, bad({"inputs": []}), 400, '"inputs"'),
    ("input without name", "POST", INFER, bad({"inputs": [{"datatype": "BYTES"}]}), 400, "name"),
    ("wrong datatype", "POST", INFER, one_input("INT32", [1], [1]), 400, "'INT32' is not taken"),
    ("shape disagrees with data", "POST", INFER, one_input("BYTES", [2], [b64(b"a")]), 400,
     "holds 2 elements, the data has 1"),
    ("negative shape", "POST", INFER, one_input("BYTES", [-1], []), 400, "shape"),
    ("bytes not [N]", "POST", INFER, one_input("BYTES", [1, 1], [b64(b"a")]), 400, "shape [N]"),
    ("no images", "POST", INFER, one_input("BYTES", [0], []), 400, "no image"),
    ("not base64", "POST", INFER, one_input("BYTES", [1], ["%%%"]), 400, "base64"),
    ("bytes as numbers", "POST", INFER, one_input("BYTES", [1], [7]), 400, "base64"),
    ("undecodable image", "POST", INFER, one_input("BYTES", [1], [b64(b"hello")]), 400,
     "not an image"),
    ("pixels not rgb", "POST", INFER, one_input("UINT8", [1, 2, 3, 2], [0] * 12), 400,
     "[N, H, W, 3]"),
    ("uint8 over 255", "POST", INFER, one_input("UINT8", [1, 2, 2, 3], [300] * 12), 400,
     "[0, 255]"),
    ("pixels as text", "POST", INFER, one_input("UINT8", [1, 2, 2, 3], ["a"] * 12), 400,
     "numbers"),
    ("fp32 not finite", "POST", INFER, bad(NAN), 400, "finite"),
    ("two inputs", "POST", INFER, bad({"inputs": [jpeg_input(b"a"), jpeg_input(b"b")]}), 400,
     "one input"),
    ("unknown output", "POST", INFER, with_output("logits"), 400, "no output 'logits'"),
    ("classification too big", "POST", INFER, with_output("probabilities", classification=5000),
     400, "classification"),
    ("classification not a number", "POST", INFER,
     with_output("probabilities", classification="3"), 400, "classification"),
    ("id not a string", "POST", INFER, bad({"id": 5, "inputs": [jpeg_input(b"a")]}), 400, "id"),
    ("header length past body", "POST", INFER, {"data": b"{}", "headers": {HEADER: "99"}}, 400,
     HEADER),
    ("header length not a number", "POST", INFER, {"data": b"{}", "headers": {HEADER: "-1"}},
     400, HEADER),
    ("binary size past body", "POST", INFER, raw_input("BYTES", 10, b"abc"), 400,
     "runs past the body"),
    ("binary left over", "POST", INFER, raw_input("BYTES", 5, length_prefixed(b"a"), b"junk"),
     400, "belong to no input"),
    ("raw bytes cut in a prefix", "POST", INFER, raw_input("BYTES", 2, b"\x05\x00"), 400,
     "length prefix"),
    ("raw bytes element too long", "POST", INFER, raw_input("BYTES", 6, b"\xff\0\0\0ab"), 400,
     "runs past the data"),
    ("raw fp32 not whole", "POST", INFER, raw_input("FP32", 3, b"abc"), 400, "not whole FP32s"),
    ("unknown model", "POST", "/v2/models/vgg16/infer", bad({"inputs": []}), 404, "vgg16"),
    ("unknown version", "POST", "/v2/models/{model}/versions/2/infer", bad({"inputs": []}), 404,
     "no version '2'"),
    ("unknown model metadata", "GET", "/v2/models/vgg16", {}, 404, "vgg16"),
    ("unknown model ready", "GET", "/v2/models/vgg16/ready", {}, 404, "vgg16"),
    ("wrong method", "GET", INFER, {}, 405, "Method Not Allowed"),
    ("unknown v2 path", "GET", "/v2/repository/index", {}, 404, "Not Found"),
    ("body over the limit", "POST", INFER, {"data": b"{" * (3 * 1024 * 1024)}, 413, "limit"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "words"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_a_bad_v2_request_gets_its_code_and_error(
    mobilenet_server: RunningServer,
    mobilenet_file: Path,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    words: str,
) -> None:
    url = mobilenet_server.url + path.format(model=mobilenet_file.stem)
    answer = requests.request(method, url, timeout=60, **kwargs)
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert list(body) == ["error"] and words in body["error"], body
    assert "Traceback" not in body["error"]


def test_the_worker_survives_every_bad_v2_request(
    mobilenet_server: RunningServer, infer_url: str, images_dir: Path
) -> None:
    """Runs after the table above: the same worker answers, and nothing was a 500."""
    dog = (images_dir / "dog.jpg").read_bytes()
    assert (
        requests.post(infer_url, json={"inputs": [jpeg_input(dog)]}, timeout=60).status_code == 200
    )
    assert mobilenet_server.worker_boots() == 1
    metrics = requests.get(mobilenet_server.url + "/metrics", timeout=10).text
    assert 'code="500"' not in metrics
    assert 'code="400",endpoint="/v2/models/<name>/infer",method="POST"' in metrics


@pytest.fixture(scope="module")
def held_server(mobilenet_file: Path, mobilenet_labels: Path) -> Iterator[InProcessServer]:
    server = serve_held(Settings(model_file=mobilenet_file, labels_file=mobilenet_labels))
    yield server
    server.stop()


def test_a_burst_of_every_protocol_forms_common_batches(
    held_server: InProcessServer, mobilenet_file: Path, images_dir: Path
) -> None:
    """While one image holds the model (held until the test lets it go, however fast the
    CPU), one image each by /predict, V1, V2 JSON, V2 binary and gRPC arrives: the next
    forward pass takes all five."""
    server, model = held_server, mobilenet_file.stem
    dog = (images_dir / "dog.jpg").read_bytes()
    channel = grpc.insecure_channel(server.grpc_target)
    call(channel, "ServerReady")  # connected before the burst
    raw = length_prefixed(dog)
    binary = binary_body(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        },
        raw,
    )
    v2 = f"{server.url}/v2/models/{model}/infer"
    senders = [
        lambda: requests.post(server.url + "/predict", files={"image": dog}, timeout=120),
        lambda: requests.post(
            f"{server.url}/v1/models/{model}:predict",
            json={"instances": [{"b64": b64(dog)}]},
            timeout=120,
        ),
        lambda: requests.post(v2, json={"inputs": [jpeg_input(dog)]}, timeout=120),
        lambda: requests.post(v2, timeout=120, **binary),
        lambda: call(
            channel,
            "ModelInfer",
            model_name=model,
            inputs=[{"name": "image", "datatype": "BYTES", "shape": [1]}],
            raw_input_contents=[raw],
        ),
    ]
    held = server.held
    held.batches.clear()
    held.passing.clear()
    held.released.clear()
    with ThreadPoolExecutor(len(senders) + 1) as pool:
        try:
            hold = pool.submit(senders[0])
            assert held.passing.wait(timeout=60), "the holding request never reached the model"
            answers = [pool.submit(sender) for sender in senders]
            deadline = time.monotonic() + 60
            while (depth := queue_depth(server)) < len(senders):
                assert time.monotonic() < deadline, f"{depth} images queued, not 5"
                time.sleep(0.01)
        finally:
            held.released.set()  # before the pool waits for its threads
        assert hold.result().status_code == 200
        results = [answer.result() for answer in answers]
    channel.close()
    assert [result.status_code for result in results[:4]] == [200] * 4
    assert results[4].outputs[0].name == "probabilities"
    assert held.batches == [1, 5]  # the hold, then all five


def queue_depth(server: InProcessServer) -> float:
    text = requests.get(server.url + "/metrics", timeout=10).text
    found = re.search(r"^modelserver_queue_depth (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/predict", "multipart/form-data; boundary=x"),
        ("/v1/models/{model}:predict", "application/json"),
        ("/v2/models/{model}/infer", "application/json"),
    ],
)
def test_a_body_over_the_limit_sent_in_one_go_still_reads_its_413(
    mobilenet_server: RunningServer, mobilenet_file: Path, path: str, content_type: str
) -> None:
    """Python's urllib writes the whole body before it reads: the server reads (and drops)
    what it refused, so the client gets the 413 rather than a reset, every time."""
    url = mobilenet_server.url + path.format(model=mobilenet_file.stem)
    body = b"{" * (4 * 1024 * 1024)  # over the 2 MB limit, even with the base64 allowance
    for _ in range(10):
        request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=60)
        assert refused.value.code == 413
        assert "over the limit" in json.load(refused.value)["error"]
