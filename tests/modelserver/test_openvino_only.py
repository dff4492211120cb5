"""The default image's promise, checked in real server processes from which TensorFlow,
Keras, LiteRT and NNCF are hidden, as that image has none of them: OpenVINO alone serves the
built-in ResNet50 from the IR that `modelserver convert` made at build time (the weights file
itself absent), a .tflite model through OpenVINO's own frontend, and a converted .keras model;
what would need TensorFlow is refused in one line that names the fix. tests/e2e runs the
image itself on the node."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from accuracy import expected_label, readme_probabilities
from modelserver.config import Settings
from serving import RunningServer, free_port, ready_app, start_server, wait_ready
from tiny_keras import LABELS, tiny_classifier

HIDDEN = ("tensorflow", "keras", "ai_edge_litert", "nncf")


@pytest.fixture(scope="module")
def openvino_only(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a process in which importing any of HIDDEN fails, as in the image."""
    hide = tmp_path_factory.mktemp("hide")
    marks = "".join(f"sys.modules[{name!r}] = None\n" for name in HIDDEN)
    (hide / "sitecustomize.py").write_text("import sys\n" + marks)
    return {**os.environ, "PYTHONPATH": str(hide)}


def modelserver(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelserver", *args],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def baked_weights(resnet_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where MODEL_WEIGHTS points in the image: no weights file there, only the IR that
    Dockerfile.server's `modelserver convert --weights` left beside it."""
    weights = tmp_path_factory.mktemp("opt-weights") / resnet_weights.name
    converted = modelserver(
        "convert", "--weights", str(resnet_weights), "--output", str(weights.with_suffix(".xml"))
    )
    assert converted.returncode == 0, converted.stderr
    assert not weights.exists() and weights.with_suffix(".bin").is_file()
    return weights


@pytest.fixture(scope="module")
def resnet50_ir_server(
    server_logs: Path, baked_weights: Path, openvino_only: dict[str, str]
) -> Iterator[RunningServer]:
    server = start_server(server_logs, "--weights", str(baked_weights), env=openvino_only)
    wait_ready(server)
    yield server
    server.stop()


def test_convert_writes_the_graph_a_conversion_at_start_up_serves(
    baked_weights: Path, resnet_server: RunningServer, cache_dir: Path
) -> None:
    """resnet_server converted the same weights at start-up into CACHE_DIR: same weights."""
    cached = list((cache_dir / "ir").glob("resnet50-*.bin"))
    assert cached, "resnet_server converted nothing into CACHE_DIR"
    assert baked_weights.with_suffix(".bin").read_bytes() in {p.read_bytes() for p in cached}


def test_the_built_in_resnet50_is_served_from_its_ir_without_tensorflow(
    resnet50_ir_server: RunningServer,
    resnet_server: RunningServer,
    baked_weights: Path,
    images_dir: Path,
) -> None:
    status = requests.get(resnet50_ir_server.url + "/v1/models/resnet50", timeout=10).json()
    assert status["backend"] == "openvino", status
    assert status["source"] == str(baked_weights.with_suffix(".xml")), status
    photo = images_dir / "dog.jpg"
    lean = resnet50_ir_server.predict(photo)
    assert lean.status_code == 200, lean.text
    full = resnet_server.predict(photo).json()["predictions"]
    # The same graph and runtime: the same classes, in the same order, to BF16's rounding.
    assert [p["label"] for p in lean.json()["predictions"][:3]] == [p["label"] for p in full[:3]]


def test_a_tflite_model_is_served_by_openvinos_own_frontend(
    server_logs: Path,
    openvino_only: dict[str, str],
    mobilenet_file: Path,
    mobilenet_labels: Path,
    images_dir: Path,
) -> None:
    server = start_server(
        server_logs, "--model-file", str(mobilenet_file), "--labels", str(mobilenet_labels),
        "--precision", "fp32", env=openvino_only,
    )  # fmt: skip
    try:
        wait_ready(server)
        labels = mobilenet_labels.read_text().splitlines()
        for photo, probability in readme_probabilities(images_dir).items():
            [top] = server.predict(images_dir / photo, query="?top_k=1").json()["predictions"]
            assert top["label"] == expected_label(labels, photo), photo
            assert abs(top["probability"] - probability) <= 0.05, (photo, top)
    finally:
        server.stop()


def test_a_converted_keras_model_is_served_as_keras_serves_it(
    tmp_path: Path, server_logs: Path, openvino_only: dict[str, str], images_dir: Path
) -> None:
    model = tmp_path / "pets.keras"
    tiny_classifier(model, "softmax")
    (tmp_path / "labels.txt").write_text("\n".join(LABELS) + "\n")
    converted = modelserver("convert", str(model))
    assert converted.returncode == 0, converted.stderr
    ir = model.with_suffix(".xml")
    assert str(ir) in converted.stdout

    server = start_server(
        server_logs, "--model-file", str(ir), "--labels", str(tmp_path / "labels.txt"),
        "--precision", "fp32", env=openvino_only,
    )  # fmt: skip
    try:
        wait_ready(server)
        served = server.predict(images_dir / "dog.jpg").json()["predictions"]
    finally:
        server.stop()
    app = ready_app(
        Settings(model_file=model, labels_file=tmp_path / "labels.txt", backend="tensorflow")
    )
    photo = (images_dir / "dog.jpg").read_bytes()
    answer = app.test_client().post("/predict", data={"image": (io.BytesIO(photo), "dog.jpg")})
    expected = answer.json["predictions"]  # type: ignore[index]
    assert [p["label"] for p in served] == [p["label"] for p in expected]
    for lean, keras in zip(served, expected, strict=True):
        assert abs(lean["probability"] - keras["probability"]) < 1e-4


@pytest.mark.parametrize(
    ("what", "said"),
    [
        ("resnet50", "the built-in ResNet50 has no OpenVINO IR at"),
        ("keras", "must be converted for OpenVINO, and TensorFlow, which converts it, is not"),
    ],
)
def test_what_needs_tensorflow_is_refused_in_one_line_naming_the_fix(
    what: str, said: str, tmp_path: Path, resnet_weights: Path, openvino_only: dict[str, str]
) -> None:
    if what == "resnet50":
        flags = ["--weights", str(resnet_weights)]  # the weights, but no IR beside them
    else:
        (tmp_path / "cats.keras").write_bytes(b"PK\x03\x04 not read: refused before")
        flags = ["--model-file", str(tmp_path / "cats.keras")]
    port, grpc_port = str(free_port()), str(free_port())
    refused = modelserver(
        "serve", "--host", "127.0.0.1", "--port", port, "--grpc-port", grpc_port, *flags,
        env=openvino_only,
    )  # fmt: skip
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1, refused.stderr
    assert refused.stderr.startswith("modelserver: cannot serve: ") and said in refused.stderr
    assert "modelserver convert" in refused.stderr and "TensorFlow image" in refused.stderr
