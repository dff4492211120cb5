"""Accuracy end to end: real photos, the real MobileNetV2, over HTTP through gunicorn, with
LiteRT (the TensorFlow backend) and with OpenVINO at each float precision this CPU has."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import openvino as ov  # type: ignore[import-untyped]
import pytest
import requests
from modelserver.models.cpu import native_bf16
from serving import EXPECTED_TOP1, RunningServer, start_server, wait_ready

PROBABILITY_TOLERANCE = 0.05
# BF16 keeps 8 significant bits: one unit in the last place is 2^-7 of the value.
BF16_EPSILON = 2.0**-7
# (backend, MODEL_PRECISION, the float precision that must run). The model is quantized: it
# keeps its INT8 operations, and its float parts run in FP32 unless BF16 is asked for.
ACCURACY_RUNTIMES = [
    ("tensorflow", "auto", "fp32"),
    ("openvino", "auto", "fp32"),
    *([("openvino", "bf16", "bf16")] if native_bf16() else []),
]


@pytest.fixture(scope="module", params=ACCURACY_RUNTIMES, ids=lambda p: "-".join(p[:2]))
def runtime_server(
    request: pytest.FixtureRequest,
    server_logs: Path,
    mobilenet_file: Path,
    mobilenet_labels: Path,
    cache_dir: Path,
) -> Iterator[tuple[RunningServer, str]]:
    """The server, and the float precision it must say it runs (read back from what it
    compiled): a precision it did not say would make every tolerance below a guess."""
    backend, precision, float_precision = request.param
    server = start_server(
        server_logs, "--model-file", str(mobilenet_file), "--labels", str(mobilenet_labels),
        "--backend", backend, "--precision", precision, "--cache-dir", str(cache_dir),
    )  # fmt: skip
    wait_ready(server)
    status = requests.get(server.url + "/v1/models/" + mobilenet_file.stem, timeout=10).json()
    assert (status["backend"], status["precision"], status["float_precision"]) == (
        backend, "int8", float_precision
    )  # fmt: skip
    yield server, float_precision
    server.stop()


def logit_bound(model_file: Path) -> float:
    """The largest logit the quantized model can give: the range its softmax's input is
    quantized to, read from the model."""
    model = ov.Core().read_model(str(model_file))
    [softmax] = [op for op in model.get_ordered_ops() if op.get_type_name() == "Softmax"]
    node = softmax.input_value(0).get_node()
    while node.get_type_name() != "FakeQuantize":
        node = node.input_value(0).get_node()
    low, high = (float(node.input_value(i).get_node().get_data().flat[0]) for i in (1, 2))
    return max(abs(low), abs(high))


def tolerance(probability: float, float_precision: str, logits: float) -> float:
    """How far a top-1 probability may be from the model's FP32 reference.

    FP32 float parts: PROBABILITY_TOLERANCE, as the photos' README rounds and resizes. BF16
    float parts (the quantized model's tail: the logits, at most `logits` in size, and the
    softmax) add their rounding: each logit is off by up to one BF16 unit in the last place,
    BF16_EPSILON * logits (half for storing it, half for the softmax's own arithmetic), so the
    top-1 log-odds move by up to twice that, and the probability by p(1 - p) times that."""
    if float_precision == "fp32":
        return PROBABILITY_TOLERANCE
    log_odds = 2 * BF16_EPSILON * logits
    return PROBABILITY_TOLERANCE + probability * (1 - probability) * log_odds


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
    runtime_server: tuple[RunningServer, str],
    images_dir: Path,
    mobilenet_file: Path,
    mobilenet_labels: Path,
    photo: str,
) -> None:
    server, float_precision = runtime_server
    labels = mobilenet_labels.read_text().splitlines()
    expected = labels[EXPECTED_TOP1[photo] + 1]  # this model's labels start with "background"
    expected_probability = readme_probabilities(images_dir)[photo]
    answer = server.predict(images_dir / photo, query="?top_k=1")
    assert answer.status_code == 200, answer.text
    [top] = answer.json()["predictions"]
    assert top["label"] == expected
    allowed = tolerance(expected_probability, float_precision, logit_bound(mobilenet_file))
    assert top["probability"] == pytest.approx(expected_probability, abs=allowed)


def test_bf16_is_allowed_its_rounding_and_no_more(mobilenet_file: Path) -> None:
    """The BF16 allowance for the beagle (README 0.82): FP32's 0.05 plus 0.045, which the
    BF16 run measured on an AVX-512 BF16 CPU (0.881) needs; FP32 float parts get no more than
    0.05, which the same CPU in BF16 would fail."""
    logits = logit_bound(mobilenet_file)
    assert logits == pytest.approx(19.48, abs=0.01)
    assert tolerance(0.82, "bf16", logits) == pytest.approx(0.095, abs=0.001)
    assert abs(0.881 - 0.82) < tolerance(0.82, "bf16", logits)
    assert abs(0.881 - 0.82) > tolerance(0.82, "fp32", logits)


def test_the_readme_lists_every_photo(images_dir: Path) -> None:
    assert readme_probabilities(images_dir).keys() == EXPECTED_TOP1.keys()
