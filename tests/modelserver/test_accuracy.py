"""Accuracy end to end: real photos, the real MobileNetV2, over HTTP through gunicorn, with
LiteRT (the TensorFlow backend) and with OpenVINO at each float precision this CPU has."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from modelserver.models.cpu import native_bf16
from serving import EXPECTED_TOP1, RunningServer, start_server, wait_ready

PROBABILITY_TOLERANCE = 0.05
# The quantized model keeps its INT8 operations; the precision is that of the rest.
ACCURACY_RUNTIMES = [
    ("tensorflow", "auto"),
    ("openvino", "fp32"),
    *([("openvino", "bf16")] if native_bf16() else []),
]


@pytest.fixture(scope="module", params=ACCURACY_RUNTIMES, ids="-".join)
def runtime_server(
    request: pytest.FixtureRequest,
    server_logs: Path,
    mobilenet_file: Path,
    mobilenet_labels: Path,
    cache_dir: Path,
) -> Iterator[RunningServer]:
    backend, precision = request.param
    server = start_server(
        server_logs, "--model-file", str(mobilenet_file), "--labels", str(mobilenet_labels),
        "--backend", backend, "--precision", precision, "--cache-dir", str(cache_dir),
    )  # fmt: skip
    wait_ready(server)
    status = requests.get(server.url + "/v1/models/" + mobilenet_file.stem, timeout=10).json()
    assert status["backend"] == backend and precision in ("auto", status["precision"])
    yield server
    server.stop()


def readme_probabilities(images_dir: Path) -> dict[str, float]:
    """The MobileNetV2 (quantized) top-1 probability of each photo, as ../shared/images'
    README gives it: the model run directly, outside this server."""
    rows = re.findall(
        r"^\| (\S+) \| \d+ \|.*?\| ([01]\.\d+) / ", (images_dir / "README.md").read_text(), re.M
    )
    return {photo: float(probability) for photo, probability in rows}


def test_the_tutorials_beagle_is_a_beagle(
    mobilenet_server: RunningServer, images_dir: Path
) -> None:
    answer = mobilenet_server.predict(images_dir / "dog.jpg")
    assert answer.status_code == 200
    body = answer.json()
    assert body["success"] is True
    assert body["predictions"][0]["label"] == "beagle"
    assert len(body["predictions"]) == 5
    probabilities = [p["probability"] for p in body["predictions"]]
    assert probabilities == sorted(probabilities, reverse=True)
    assert 0.5 < probabilities[0] <= 1.0


@pytest.mark.parametrize("photo", sorted(EXPECTED_TOP1))
def test_every_photo_gets_its_expected_label_and_probability(
    runtime_server: RunningServer, images_dir: Path, mobilenet_labels: Path, photo: str
) -> None:
    labels = mobilenet_labels.read_text().splitlines()
    expected = labels[EXPECTED_TOP1[photo] + 1]  # this model's labels start with "background"
    expected_probability = readme_probabilities(images_dir)[photo]
    answer = runtime_server.predict(images_dir / photo, query="?top_k=1")
    assert answer.status_code == 200, answer.text
    [top] = answer.json()["predictions"]
    assert top["label"] == expected
    assert top["probability"] == pytest.approx(expected_probability, abs=PROBABILITY_TOLERANCE)


def test_the_readme_lists_every_photo(images_dir: Path) -> None:
    assert readme_probabilities(images_dir).keys() == EXPECTED_TOP1.keys()
