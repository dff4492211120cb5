"""Accuracy end to end: real photos, the real MobileNetV2, over HTTP through gunicorn."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from serving import EXPECTED_TOP1, RunningServer

PROBABILITY_TOLERANCE = 0.05


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
    mobilenet_server: RunningServer, images_dir: Path, mobilenet_labels: Path, photo: str
) -> None:
    labels = mobilenet_labels.read_text().splitlines()
    expected = labels[EXPECTED_TOP1[photo] + 1]  # this model's labels start with "background"
    expected_probability = readme_probabilities(images_dir)[photo]
    answer = mobilenet_server.predict(images_dir / photo, query="?top_k=1")
    assert answer.status_code == 200, answer.text
    [top] = answer.json()["predictions"]
    assert top["label"] == expected
    assert top["probability"] == pytest.approx(expected_probability, abs=PROBABILITY_TOLERANCE)


def test_the_readme_lists_every_photo(images_dir: Path) -> None:
    assert readme_probabilities(images_dir).keys() == EXPECTED_TOP1.keys()
