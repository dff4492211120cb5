"""The ResNet50 path with a generated weights file: loading, the full contract, batching,
served by every backend and precision this machine has (one server each, in turn)."""

from __future__ import annotations

import base64
import hashlib
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from modelserver.models.base import caffe_preprocess
from modelserver.models.labels import imagenet_labels
from serving import RUNTIMES, RunningServer, start_server, wait_ready

PHOTOS = ("dog.jpg", "bmw.png", "parrot.jpg", "grace_hopper.bmp")


@pytest.fixture(scope="module", params=RUNTIMES, ids="-".join)
def resnet_server(
    request: pytest.FixtureRequest, server_logs: Path, resnet_weights: Path, cache_dir: Path
) -> Iterator[RunningServer]:
    """This module's ResNet50 server: one per backend and precision (INT8 serves the IR
    `modelserver quantize` wrote beside the weights)."""
    backend, precision = request.param
    if precision == "int8":
        request.getfixturevalue("resnet_int8_ir")
    server = start_server(
        server_logs, "--weights", str(resnet_weights), "--cache-dir", str(cache_dir),
        "--backend", backend, "--precision", precision,
    )  # fmt: skip
    wait_ready(server)
    yield server
    server.stop()


def by_label(predictions: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Probabilities per label; ImageNet names two classes "crane" and two "maillot"."""
    grouped: dict[str, list[float]] = defaultdict(list)
    for prediction in predictions:
        grouped[prediction["label"]].append(prediction["probability"])
    return {label: sorted(values) for label, values in grouped.items()}


def test_the_model_is_loaded_from_the_given_weights_file(
    resnet_server: RunningServer, resnet_weights: Path, request: pytest.FixtureRequest
) -> None:
    backend, precision = request.node.callspec.params["resnet_server"]
    status = requests.get(resnet_server.url + "/v1/models/resnet50", timeout=10).json()
    assert status["state"] == "ready" and status["ready"] is True
    assert (status["backend"], status["precision"], status["device"]) == (backend, precision, "CPU")
    assert status["quantized"] is (precision == "int8")
    assert status["cpu"]["cores"] >= 1 and status["threads"] >= 1
    source = resnet_weights
    if precision == "int8":
        source = resnet_weights.with_name(resnet_weights.stem + ".int8.xml")
        assert status["source"] == str(source)
        source_bytes = source.read_bytes() + source.with_suffix(".bin").read_bytes()
    else:
        assert status["source"] == str(resnet_weights)
        source_bytes = resnet_weights.read_bytes()
    assert status["sha256"] == hashlib.sha256(source_bytes).hexdigest()
    assert status["input_shape"] == [224, 224, 3]
    assert status["labels"] == 1000
    metrics = requests.get(resnet_server.url + "/metrics", timeout=10).text
    [info] = [line for line in metrics.splitlines() if line.startswith("modelserver_model_info{")]
    labels = dict(re.findall(r'(\w+)="([^"]*)"', info))
    float_precision = "fp32" if precision == "int8" else precision  # INT8's float parts: FP32
    assert status["float_precision"] == float_precision
    assert labels == {
        "model": "resnet50", "backend": backend, "precision": precision,
        "float_precision": float_precision, "device": "CPU",
    }  # fmt: skip
    assert info.endswith(" 1.0")


def test_predict_answers_the_tutorials_contract(
    resnet_server: RunningServer, images_dir: Path
) -> None:
    answer = resnet_server.predict(images_dir / "dog.jpg")
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"success", "predictions"} and body["success"] is True
    predictions = body["predictions"]
    assert len(predictions) == 5
    assert {p["label"] for p in predictions} <= set(imagenet_labels())
    probabilities = [p["probability"] for p in predictions]
    assert probabilities == sorted(probabilities, reverse=True)
    assert all(0 <= p <= 1 for p in probabilities) and sum(probabilities) <= 1 + 1e-6


def test_top_k_chooses_how_many_predictions(resnet_server: RunningServer, images_dir: Path) -> None:
    for top_k in (1, 3, 1000):
        answer = resnet_server.predict(images_dir / "dog.jpg", query=f"?top_k={top_k}")
        assert len(answer.json()["predictions"]) == top_k
    everything = answer.json()["predictions"]
    assert abs(sum(p["probability"] for p in everything) - 1) < 1e-3


def test_a_batch_gives_what_single_requests_give(
    resnet_server: RunningServer, images_dir: Path
) -> None:
    photos = [images_dir / name for name in PHOTOS]
    together = resnet_server.predict(*photos, query="?top_k=1000").json()["results"]
    assert [r["filename"] for r in together] == list(PHOTOS)
    for photo, batched in zip(photos, together, strict=True):
        alone = resnet_server.predict(photo, query="?top_k=1000").json()["predictions"]
        batched_by_label, alone_by_label = by_label(batched["predictions"]), by_label(alone)
        assert batched_by_label.keys() == alone_by_label.keys()
        for label, probabilities in alone_by_label.items():
            assert np.allclose(batched_by_label[label], probabilities, rtol=0, atol=1e-5)


def test_the_tf_serving_api_gives_the_same_answer(
    resnet_server: RunningServer, images_dir: Path
) -> None:
    photos = [images_dir / "dog.jpg", images_dir / "bmw.png"]
    instances: list[dict[str, Any]] = [{"b64": base64.b64encode(photos[0].read_bytes()).decode()}]
    instances.append({"image_bytes": {"b64": base64.b64encode(photos[1].read_bytes()).decode()}})
    answer = requests.post(
        resnet_server.url + "/v1/models/resnet50:predict", json={"instances": instances}, timeout=60
    )
    assert answer.status_code == 200
    v1 = answer.json()["predictions"]
    assert len(v1) == 2
    for photo, predictions in zip(photos, v1, strict=True):
        multipart = resnet_server.predict(photo).json()["predictions"]
        assert [p["label"] for p in predictions] == [p["label"] for p in multipart]
        assert np.allclose(
            [p["probability"] for p in predictions],
            [p["probability"] for p in multipart],
            atol=1e-5,
        )


def test_preprocessing_matches_keras() -> None:
    from keras.applications.resnet50 import preprocess_input

    pixels = np.random.default_rng(7).uniform(0, 255, (2, 224, 224, 3)).astype(np.float32)
    expected = preprocess_input(pixels.copy())
    assert np.allclose(caffe_preprocess(pixels), expected, atol=1e-4)
