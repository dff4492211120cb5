"""Serving your own classifier from a `.keras` file, in-process through the Flask app."""

from __future__ import annotations

import io
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from flask.testing import FlaskClient
from modelserver.app import create_app, service_of
from modelserver.config import Settings
from PIL import Image
from serving import ready_app
from tiny_keras import LABELS, tiny_classifier


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keras")
    (directory / "labels.txt").write_text("\n".join(LABELS) + "\n")
    return directory


@pytest.mark.parametrize("backend", ["tensorflow", "openvino"])
@pytest.mark.parametrize("activation", ["softmax", None], ids=["probabilities", "logits"])
def test_a_keras_file_is_served_with_its_own_labels(
    model_dir: Path, images_dir: Path, activation: str | None, backend: str
) -> None:
    """Through TensorFlow, and converted by OpenVINO (its uint8 input and the softmax
    found in the converted graph)."""
    path = model_dir / f"pets_{activation}.keras"
    model = tiny_classifier(path, activation)
    labels = model_dir / "labels.txt"
    app = ready_app(Settings(model_file=path, labels_file=labels, backend=backend))
    photo = (images_dir / "dog.jpg").read_bytes()

    answer = app.test_client().post("/predict", data={"image": (io.BytesIO(photo), "dog.jpg")})
    assert answer.status_code == 200, answer.json
    predictions = answer.json["predictions"]  # type: ignore[index]

    resized = Image.open(io.BytesIO(photo)).convert("RGB").resize((48, 32))
    expected = np.asarray(model(np.asarray(resized, dtype=np.float32)[np.newaxis]))[0]
    if activation is None:
        expected = np.exp(expected) / np.exp(expected).sum()
    assert [p["label"] for p in predictions] == [LABELS[i] for i in np.argsort(-expected)]
    assert np.allclose([p["probability"] for p in predictions], np.sort(expected)[::-1], atol=0.02)
    status = app.test_client().get(f"/v1/models/pets_{activation}").json
    assert status["input_shape"] == [32, 48, 3] and status["labels"] == 3  # type: ignore[index]
    assert status["backend"] == backend  # type: ignore[index]


def test_draining_is_not_ready_but_answers_in_flight_work(
    mobilenet_file: Path, mobilenet_labels: Path, images_dir: Path
) -> None:
    app = ready_app(Settings(model_file=mobilenet_file, labels_file=mobilenet_labels))
    client: FlaskClient = app.test_client()
    service_of(app).begin_draining()
    assert client.get("/readyz").status_code == 503
    photo = (images_dir / "dog.jpg").read_bytes()
    answer = client.post("/predict", data={"image": (io.BytesIO(photo), "dog.jpg")})
    assert answer.status_code == 200


def test_labels_that_do_not_fit_the_model_are_refused(model_dir: Path) -> None:
    path = model_dir / "pets_softmax.keras"
    tiny_classifier(path, "softmax")
    (model_dir / "two.txt").write_text("cat\ndog\n")
    app = create_app(Settings(model_file=path, labels_file=model_dir / "two.txt"))
    deadline = time.monotonic() + 60
    while service_of(app).failure is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert "MODEL_LABELS has 2 labels but" in service_of(app).failure  # type: ignore[operator]
    answer = app.test_client().get("/readyz")
    assert answer.status_code == 503 and "2 labels" in answer.json["error"]  # type: ignore[index]


def test_without_a_cache_dir_openvino_leaves_no_conversion_behind(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = model_dir / "pets_softmax.keras"
    tiny_classifier(path, "softmax")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    app = ready_app(Settings(model_file=path, labels_file=model_dir / "labels.txt"))
    assert service_of(app).describe()["backend"] == "openvino"
    assert list(tmp_path.iterdir()) == []
