"""Accuracy end to end: real photos, the real MobileNetV2, over HTTP through gunicorn."""

from __future__ import annotations

from pathlib import Path

import pytest
from serving import EXPECTED_TOP1, RunningServer


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
def test_every_photo_gets_its_expected_label(
    mobilenet_server: RunningServer, images_dir: Path, mobilenet_labels: Path, photo: str
) -> None:
    labels = mobilenet_labels.read_text().splitlines()
    expected = labels[EXPECTED_TOP1[photo] + 1]  # this model's labels start with "background"
    answer = mobilenet_server.predict(images_dir / photo, query="?top_k=1")
    assert answer.status_code == 200, answer.text
    assert [p["label"] for p in answer.json()["predictions"]] == [expected]
