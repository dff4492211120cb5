"""Real models and real servers for the model-server tests.

Servers are started the way users start them (`modelserver serve`, so gunicorn) on free
loopback ports, once per session where the test does not stop them itself.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from seeded import write_int8_ir, write_seeded_resnet50_weights
from serving import (
    PAGE_MODEL_STEM,
    SCRIPT_LABEL,
    SCRIPT_LABEL_INDEX,
    RunningServer,
    start_server,
    wait_ready,
    wait_until,
)


@pytest.fixture(scope="session")
def images_dir(shared_dir: Path) -> Path:
    return shared_dir / "images"


@pytest.fixture(scope="session")
def mobilenet_file(shared_dir: Path) -> Path:
    return shared_dir / "models" / "mobilenet_v2_1.0_224_quant.tflite"


@pytest.fixture(scope="session")
def mobilenet_labels(shared_dir: Path) -> Path:
    return shared_dir / "models" / "imagenet_labels.txt"


@pytest.fixture(scope="session")
def resnet_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded random ResNet50 in the official Keras weights layout (legacy HDF5)."""
    path = tmp_path_factory.mktemp("weights") / "resnet50_seeded.h5"
    write_seeded_resnet50_weights(path, seed=20261124)
    return path


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One CACHE_DIR for the session's servers: ResNet50 is converted and compiled once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def resnet_int8_ir(resnet_weights: Path, images_dir: Path, cache_dir: Path) -> Path:
    """The seeded ResNet50's INT8 IR beside its weights, by `modelserver quantize`."""
    ir = write_int8_ir(resnet_weights, images_dir, cache_dir)
    assert 'type="FakeQuantize"' in ir.read_text()
    return ir


@pytest.fixture(scope="session")
def server_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("server-logs")


@pytest.fixture(scope="session")
def mobilenet_server(
    server_logs: Path, mobilenet_file: Path, mobilenet_labels: Path, cache_dir: Path
) -> Iterator[RunningServer]:
    """The real MobileNetV2 served through gunicorn, for accuracy and concurrency tests."""
    server = start_server(
        server_logs,
        "--model-file",
        str(mobilenet_file),
        "--labels",
        str(mobilenet_labels),
        "--max-upload-bytes",
        str(2 * 1024 * 1024),
        "--cache-dir",
        str(cache_dir),
    )
    wait_ready(server)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def resnet_server(
    server_logs: Path, resnet_weights: Path, cache_dir: Path
) -> Iterator[RunningServer]:
    """ResNet50 from a weights file, through gunicorn, as a pod runs it (backend `auto`)."""
    server = start_server(
        server_logs, "--weights", str(resnet_weights), "--cache-dir", str(cache_dir)
    )
    wait_ready(server)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def page_server(
    server_logs: Path,
    mobilenet_file: Path,
    mobilenet_labels: Path,
    cache_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningServer]:
    """The real MobileNetV2 for the page's tests, as someone careless or hostile might serve
    it: its file named with HTML, one label a script (soccer_ball.jpg's top-1); through two
    gunicorn workers, so that the live figures must be the sum of both."""
    folder = tmp_path_factory.mktemp("page-model")
    model = folder / f"{PAGE_MODEL_STEM}.tflite"
    shutil.copyfile(mobilenet_file, model)
    labels = mobilenet_labels.read_text().splitlines()
    labels[SCRIPT_LABEL_INDEX] = SCRIPT_LABEL
    (folder / "labels.txt").write_text("\n".join(labels) + "\n")
    server = start_server(
        server_logs,
        "--model-file",
        str(model),
        "--labels",
        str(folder / "labels.txt"),
        "--workers",
        "2",
        "--cache-dir",
        str(cache_dir),
    )
    wait_ready(server)

    def both_workers_ready() -> bool:  # each worker logs "model ... ready in ... s" once
        return server.log.read_text(errors="replace").count(" ready in ") == 2

    wait_until(both_workers_ready, "the second worker never loaded the model")
    yield server
    server.stop()
