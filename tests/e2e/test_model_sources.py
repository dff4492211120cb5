"""Real accuracy in a real pod: Google's quantized MobileNetV2 delivered by spec.modelSource,
from a real S3 server (SeaweedFS, its S3 gateway on the node IP, credentials enforced, read
through a Secret) and from a pvc:// claim (a hostPath PersistentVolume readable by the pods'
non-root user). Every photo in ../shared/images must get its expected label and probability
through the Service's node port: the pod runs on this machine's CPU, so the expectations are
the ones tests/modelserver/test_accuracy.py holds a local server to.

Both classifiers are made up front and waited on together (one replica each, small CPU
requests: the machine has 2 cores). Traffic goes only to 127.0.0.1 node ports and the node IP.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from accuracy import expected_label, logit_bound, readme_probabilities, tolerance
from claims import host_path_claim
from node import NODE_IP, NodeCluster
from s3_server import S3Server, running_s3_server
from serving import EXPECTED_TOP1

MODEL_FILE = "mobilenet_v2_1.0_224_quant.tflite"
SERVED_NAME = "mobilenet_v2"  # the file's name without its extension, wherever it comes from
BUCKET, MODEL_KEY, LABELS_KEY = "models", f"mobilenet/{SERVED_NAME}.tflite", "mobilenet/labels.txt"
SECRET = "s3-models"
CLAIM = "models"
# The ImageClassifier's name for each source.
SOURCES = {"s3": "from-s3", "pvc": "from-pvc"}
# A model on the claim that the pods' user (uid 10001) may not read, and who serves it.
LOCKED, LOCKED_NAME = "locked.tflite", "from-locked-file"


@dataclass(frozen=True)
class Served:
    """One classifier at Ready: its status, its node-port URL, and the runtime its pod
    reports (GET /v1/models/<name>)."""

    classifier: dict[str, Any]
    url: str
    runtime: dict[str, Any]


@dataclass(frozen=True)
class Delivered:
    """Both classifiers, and the S3 server one of them downloaded from."""

    served: dict[str, Served]
    store: S3Server
    model_sha256: str
    locked: dict[str, Any]  # the classifier of the file its pods may not read, once it says so


@contextlib.contextmanager
def store_with_model(directory: Path, model: Path, labels: Path) -> Iterator[S3Server]:
    """SeaweedFS with its S3 gateway on the node IP (where pods reach this machine), holding
    the model and its labels."""
    with running_s3_server(directory, s3_host=NODE_IP) as store:
        client = store.client()
        client.create_bucket(Bucket=BUCKET)
        client.upload_file(str(model), BUCKET, MODEL_KEY)
        client.upload_file(str(labels), BUCKET, LABELS_KEY)
        yield store


@contextlib.contextmanager
def claim_folder(model: Path, labels: Path) -> Iterator[Path]:
    """A folder under /tmp holding the model and labels as the claim's paths name them,
    readable by the pods' user (a hostPath volume keeps the host's owners and modes)."""
    root = Path(tempfile.mkdtemp(prefix="kubeclassify-e2e-models-", dir="/tmp"))
    try:
        folder = root / "mobilenet"
        folder.mkdir()
        shutil.copyfile(model, folder / f"{SERVED_NAME}.tflite")
        shutil.copyfile(labels, folder / "labels.txt")
        for path in (root, folder):
            path.chmod(0o755)
        for path in folder.iterdir():
            path.chmod(0o644)
        locked = folder / LOCKED
        shutil.copyfile(model, locked)
        locked.chmod(0o600)  # root's alone, as a claim's files often are
        yield root
    finally:
        shutil.rmtree(root)


def seconds_to_ready(classifier: dict[str, Any]) -> float:
    """From creation to Ready=True, by the API server's clock (whole seconds)."""
    [ready] = [c for c in classifier["status"]["conditions"] if c["type"] == "Ready"]
    created = datetime.fromisoformat(classifier["metadata"]["creationTimestamp"])
    return (datetime.fromisoformat(ready["lastTransitionTime"]) - created).total_seconds()


def model_runtime(http: requests.Session, url: str) -> dict[str, Any]:
    """GET /v1/models/<name> through the node port; kube-proxy may take a moment after Ready
    to route the node port to the new pod."""
    deadline = time.monotonic() + 15
    while True:
        try:
            answer = http.get(f"{url}/v1/models/{SERVED_NAME}", timeout=30)
            break
        except requests.ConnectionError:
            assert time.monotonic() < deadline, f"{url}: no answer 15 s after Ready"
            time.sleep(0.5)
    assert answer.status_code == 200, answer.text
    runtime: dict[str, Any] = answer.json()
    return runtime


@pytest.fixture(scope="module")
def delivered(
    node_cluster: NodeCluster,
    operator_installed: None,
    shared_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    http: requests.Session,
) -> Iterator[Delivered]:
    """Both classifiers Ready, their sources made first: SeaweedFS and its Secret, the
    claim's folder, volume and claim; all removed afterwards."""
    models = shared_dir / "models"
    model, labels = models / MODEL_FILE, models / "imagenet_labels.txt"
    assert model.is_file() and labels.is_file(), f"MobileNetV2 or its labels missing: {model}"
    model_sha256 = hashlib.sha256(model.read_bytes()).hexdigest()
    sources = {
        "s3": {
            "storageUri": f"s3://{BUCKET}/{MODEL_KEY}",
            "labelsUri": f"s3://{BUCKET}/{LABELS_KEY}",
            "sha256": model_sha256,
            "credentialsSecret": SECRET,
            "sizeLimit": "100Mi",
        },
        "pvc": {
            "storageUri": f"pvc://{CLAIM}/mobilenet/{SERVED_NAME}.tflite",
            "labelsUri": f"pvc://{CLAIM}/mobilenet/labels.txt",
        },
    }
    with (
        store_with_model(tmp_path_factory.mktemp("seaweedfs"), model, labels) as store,
        claim_folder(model, labels) as folder,
        node_cluster.namespace() as namespace,
        host_path_claim(node_cluster, folder, namespace, CLAIM),
    ):
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET}}
        node_cluster.apply({**secret, "stringData": store.env}, namespace)
        started = time.monotonic()
        for source, name in SOURCES.items():
            node_cluster.apply(
                node_cluster.classifier(name, modelSource=sources[source], replicas=1), namespace
            )
        locked_source = {"storageUri": f"pvc://{CLAIM}/mobilenet/{LOCKED}"}
        node_cluster.apply(
            node_cluster.classifier(LOCKED_NAME, modelSource=locked_source, replicas=1), namespace
        )
        ready = {
            source: node_cluster.wait_condition(name, namespace, timeout=600)
            for source, name in SOURCES.items()
        }
        print(f"\nboth classifiers applied to both Ready: {time.monotonic() - started:.1f} s")
        served = {}
        for source, name in SOURCES.items():
            print(f"{source}: created to Ready in {seconds_to_ready(ready[source]):.0f} s")
            url = node_cluster.url(name, namespace)
            served[source] = Served(ready[source], url, model_runtime(http, url))
        locked = node_cluster.wait_condition(
            LOCKED_NAME, namespace, status="False", reason="ModelLoadFailed", timeout=300
        )
        yield Delivered(served, store, model_sha256, locked)


def test_the_store_enforces_credentials(delivered: Delivered, http: requests.Session) -> None:
    """An unsigned GET of the model is refused: the pod's download used the Secret's keys."""
    answer = http.get(f"{delivered.store.endpoint_url}/{BUCKET}/{MODEL_KEY}", timeout=10)
    assert answer.status_code == 403, answer.text


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_the_status_and_the_pod_say_what_is_served(delivered: Delivered, source: str) -> None:
    """status.model names the source (and, for a download, the sha256 the init container
    verified); the pod serves that very file under its name, quantized."""
    served = delivered.served[source]
    model = served.classifier["status"]["model"]
    spec_source = served.classifier["spec"]["modelSource"]
    assert (model["name"], model["source"], model["format"]) == (
        SERVED_NAME, spec_source["storageUri"], "tflite"
    )  # fmt: skip
    assert model.get("sha256") == (delivered.model_sha256 if source == "s3" else None)
    assert (served.runtime["name"], served.runtime["sha256"], served.runtime["precision"]) == (
        SERVED_NAME, delivered.model_sha256, "int8"
    )  # fmt: skip
    assert served.runtime["float_precision"] in ("fp32", "bf16"), served.runtime
    # The .tflite file through OpenVINO's own frontend, in the image that has no TensorFlow.
    assert served.runtime["backend"] == "openvino", served.runtime


def test_a_file_the_pods_may_not_read_is_said_so(delivered: Delivered) -> None:
    """A claim keeps its files' owners and modes: the status names the file, the pods' user
    and the system's reason, not an unreadable model."""
    [ready] = [c for c in delivered.locked["status"]["conditions"] if c["type"] == "Ready"]
    assert f"MODEL_FILE=/mnt/pvc/{CLAIM}/mobilenet/{LOCKED} cannot be opened by uid 10001: " \
        "Permission denied" in ready["message"], ready  # fmt: skip


@pytest.fixture(scope="module")
def logits(shared_dir: Path) -> float:
    return logit_bound(shared_dir / "models" / MODEL_FILE)


@pytest.mark.parametrize("photo", sorted(EXPECTED_TOP1))
@pytest.mark.parametrize("source", sorted(SOURCES))
def test_every_photo_gets_its_expected_label_and_probability(
    delivered: Delivered,
    shared_dir: Path,
    logits: float,
    http: requests.Session,
    source: str,
    photo: str,
) -> None:
    served = delivered.served[source]
    images = shared_dir / "images"
    labels = (shared_dir / "models" / "imagenet_labels.txt").read_text().splitlines()
    files = {"image": (photo, (images / photo).read_bytes())}
    answer = http.post(f"{served.url}/predict?top_k=1", files=files, timeout=60)
    assert answer.status_code == 200, answer.text
    [top] = answer.json()["predictions"]
    assert top["label"] == expected_label(labels, photo)
    expected = readme_probabilities(images)[photo]
    allowed = tolerance(expected, served.runtime["float_precision"], logits)
    assert top["probability"] == pytest.approx(expected, abs=allowed)
