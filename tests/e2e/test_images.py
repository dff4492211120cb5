"""Which image serves what, on the node (issue 17): the default image has OpenVINO alone and
the built-in ResNet50 already converted; the operator runs it unless a spec needs TensorFlow,
for which it runs the TensorFlow image; an image that cannot serve the spec is refused in the
status, and no pod is made to crash. Traffic goes only to 127.0.0.1 node ports."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import requests
from control_plane import REPO_ROOT
from modelserver.weights import OFFICIAL_FILE_NAME
from node import NodeCluster

DOG = (REPO_ROOT / "examples" / "images" / "dog.jpg").read_bytes()
WEIGHTS_DIR = "/opt/weights"


def in_image(image: str, script: str) -> str:
    """What `python -c script` prints inside the image (buildah; no registry, no network)."""
    done = subprocess.run(
        ["buildah", "run", "--network", "none", "--", _container(image), "python", "-c", script],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def _container(image: str) -> str:
    made = subprocess.run(
        ["buildah", "from", "--pull=never", image], capture_output=True, text=True, check=True
    )
    return made.stdout.strip()


def test_the_default_image_has_openvino_alone_and_the_converted_model(
    node_cluster: NodeCluster,
) -> None:
    found = json.loads(
        in_image(
            node_cluster.images.server,
            "import importlib.util as u, json, os; print(json.dumps({"
            "'modules': {m: u.find_spec(m) is not None for m in "
            "('openvino', 'tensorflow', 'keras', 'nncf', 'ai_edge_litert')}, "
            f"'files': sorted(os.listdir({WEIGHTS_DIR!r}))}}))",
        )
    )
    assert found["modules"] == {
        "openvino": True, "tensorflow": False, "keras": False, "nncf": False,
        "ai_edge_litert": False,
    }  # fmt: skip
    stem = OFFICIAL_FILE_NAME.removesuffix(".h5")
    assert found["files"] == [f"{stem}.bin", f"{stem}.xml"]  # no weights file: the IR only


def served_model(cluster: NodeCluster, name: str, namespace: str) -> dict[str, Any]:
    """GET /v1/models/resnet50 through the Service's node port."""
    answer = requests.get(cluster.url(name, namespace) + "/v1/models/resnet50", timeout=30)
    assert answer.status_code == 200, answer.text
    model: dict[str, Any] = answer.json()
    return model


def pod_image(cluster: NodeCluster, name: str, namespace: str) -> str:
    [pod] = cluster.pods(namespace, f"app.kubernetes.io/instance={name}")
    [container] = pod["spec"]["containers"]
    image: str = container["image"]
    return image


def test_the_operator_runs_the_image_each_spec_needs(
    node_cluster: NodeCluster, operator_installed: None, e2e_namespace: str
) -> None:
    """A classifier that names no image: the default one gets the OpenVINO image and serves
    the IR baked in it; runtime.backend tensorflow gets the TensorFlow image."""
    names = {"default": {}, "keras-runtime": {"runtime": {"backend": "tensorflow"}}}
    for name, spec in names.items():
        node_cluster.apply(node_cluster.classifier(name, **spec), e2e_namespace)
    for name in names:
        node_cluster.wait_condition(name, e2e_namespace)

    assert pod_image(node_cluster, "default", e2e_namespace) == node_cluster.images.server
    default = served_model(node_cluster, "default", e2e_namespace)
    assert default["backend"] == "openvino", default
    assert default["source"] == f"{WEIGHTS_DIR}/{OFFICIAL_FILE_NAME.removesuffix('.h5')}.xml"

    assert pod_image(node_cluster, "keras-runtime", e2e_namespace) == node_cluster.images.tensorflow
    tensorflow = served_model(node_cluster, "keras-runtime", e2e_namespace)
    assert tensorflow["backend"] == "tensorflow", tensorflow
    assert tensorflow["source"] == f"{WEIGHTS_DIR}/{OFFICIAL_FILE_NAME}"

    for name in names:  # seeded weights: any ImageNet class, but an answer from each
        answer = requests.post(
            node_cluster.url(name, e2e_namespace) + "/predict", files={"image": DOG}, timeout=60
        )
        assert answer.status_code == 200 and len(answer.json()["predictions"]) == 5, answer.text


def test_the_openvino_image_named_for_tensorflow_is_refused_in_the_status(
    node_cluster: NodeCluster, operator_installed: None, e2e_namespace: str
) -> None:
    spec = {"image": node_cluster.images.server, "runtime": {"backend": "tensorflow"}}
    node_cluster.apply(node_cluster.classifier("mismatch", **spec), e2e_namespace)
    refused = node_cluster.wait_condition(
        "mismatch", e2e_namespace, status="False", reason="InvalidSpec", timeout=120
    )
    [ready] = [c for c in refused["status"]["conditions"] if c["type"] == "Ready"]
    assert "has OpenVINO only" in ready["message"], ready
    assert node_cluster.images.tensorflow in ready["message"]  # the fix: the image to run
    assert node_cluster.get("deployment", "mismatch", e2e_namespace) is None  # no crash loop
    events = node_cluster.kubectl(
        "get", "events", "--namespace", e2e_namespace, "--field-selector",
        "involvedObject.name=mismatch", "--output", "json",
    )  # fmt: skip
    reasons = {event["reason"] for event in json.loads(events.stdout)["items"]}
    assert "InvalidSpec" in reasons, reasons
