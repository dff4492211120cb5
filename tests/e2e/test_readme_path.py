"""The README's path on a real node: `kubectl apply -f examples/minimal.yaml` (only the image
swapped; seeded ResNet50 weights baked in) becomes Ready, and answers every protocol through
its Service: /predict, V1 and V2 REST on the `http` port's nodePort, gRPC on the `grpc` port's,
both on 127.0.0.1; and the README's `curl` of `status.url` once the Service has an address.

Seeded weights give random labels: the tests check the contract, never which label."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import requests
from control_plane import REPO_ROOT
from node import NODE_IP, NodeCluster
from oip_grpc import call

NAME = "resnet"  # examples/minimal.yaml's
MODEL = "resnet50"
DOG = (REPO_ROOT / "examples" / "images" / "dog.jpg").read_bytes()
CLASS_INDEX = REPO_ROOT / "modelserver" / "modelserver" / "data" / "imagenet_class_index.json"
CLASSES = json.loads(CLASS_INDEX.read_text())  # "index": [wordnet id, label]
LABELS = {label for _, label in CLASSES.values()}  # 998: two labels name two classes each


@dataclass(frozen=True)
class Served:
    """The classifier as a client sees it: its status and where its Service answers."""

    classifier: dict[str, Any]
    url: str  # http://127.0.0.1:<nodePort of the http port>
    grpc_target: str  # 127.0.0.1:<nodePort of the grpc port>


@pytest.fixture(scope="module")
def resnet(node_cluster: NodeCluster, operator_installed: None) -> Iterator[Served]:
    with node_cluster.namespace() as namespace:
        manifest = node_cluster.example("minimal")
        assert manifest["metadata"]["name"] == NAME
        started = time.monotonic()
        node_cluster.apply(manifest, namespace)
        # Its pod ready, it says what it still lacks: this node has no load-balancer provider.
        node_cluster.wait_condition(
            NAME, namespace, status="False", reason="LoadBalancerPending", timeout=600
        )
        print(f"\nkubectl apply to a ready pod: {time.monotonic() - started:.1f} s")
        node_cluster.assign_load_balancer(NAME, namespace)
        classifier = node_cluster.wait_condition(NAME, namespace, timeout=60)
        print(f"kubectl apply to Ready: {time.monotonic() - started:.1f} s")
        yield Served(
            classifier,
            node_cluster.url(NAME, namespace),
            f"127.0.0.1:{node_cluster.node_port(NAME, 'grpc', namespace)}",
        )


def check_top5(predictions: list[dict[str, Any]]) -> None:
    assert len(predictions) == 5
    assert {p["label"] for p in predictions} <= LABELS
    probabilities = [p["probability"] for p in predictions]
    assert probabilities == sorted(probabilities, reverse=True)
    assert all(0 <= p <= 1 for p in probabilities) and sum(probabilities) <= 1 + 1e-5


def check_distribution(probabilities: list[float]) -> None:
    assert len(probabilities) == len(CLASSES) == 1000
    assert min(probabilities) >= 0 and sum(probabilities) == pytest.approx(1, abs=1e-3)


def test_predict_through_the_node_port(resnet: Served, http: requests.Session) -> None:
    answer = http.post(f"{resnet.url}/predict", files={"image": ("dog.jpg", DOG)}, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["success"] is True
    check_top5(answer.json()["predictions"])


def test_v1_through_the_node_port(resnet: Served, http: requests.Session) -> None:
    body = {"instances": [{"b64": base64.b64encode(DOG).decode()}]}
    answer = http.post(f"{resnet.url}/v1/models/{MODEL}:predict", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    [predictions] = answer.json()["predictions"]
    check_top5(predictions)


def test_v2_rest_through_the_node_port(resnet: Served, http: requests.Session) -> None:
    image = {"name": "image", "datatype": "BYTES", "shape": [1]}
    body = {"id": "e2e-1", "inputs": [{**image, "data": [base64.b64encode(DOG).decode()]}]}
    answer = http.post(f"{resnet.url}/v2/models/{MODEL}/infer", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["id"] == "e2e-1"
    [output] = answer.json()["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == (
        "probabilities",
        "FP32",
        [1, 1000],
    )
    check_distribution(output["data"])


def test_grpc_through_the_grpc_node_port(resnet: Served) -> None:
    # No proxy from the environment: the channel goes straight to 127.0.0.1.
    with grpc.insecure_channel(resnet.grpc_target, [("grpc.enable_http_proxy", 0)]) as channel:
        assert call(channel, "ServerReady").ready
        assert call(channel, "ModelReady", name=MODEL).ready
        image = {"name": "image", "datatype": "BYTES", "shape": [1]}
        answer = call(
            channel,
            "ModelInfer",
            model_name=MODEL,
            inputs=[{**image, "contents": {"bytes_contents": [DOG]}}],
        )
    [output] = answer.outputs
    assert (output.name, output.datatype, list(output.shape)) == (
        "probabilities",
        "FP32",
        [1, 1000],
    )
    check_distribution(list(output.contents.fp32_contents))


def test_the_readmes_curl_of_the_status_url(resnet: Served, http: requests.Session) -> None:
    """`curl -F image=@examples/images/dog.jpg "$(kubectl get ic resnet -o
    jsonpath='{.status.url}')"`: the load balancer's address is the node IP, served by
    kube-proxy."""
    url = resnet.classifier["status"]["url"]
    assert url == f"http://{NODE_IP}:80/predict"
    answer = http.post(url, files={"image": ("dog.jpg", DOG)}, timeout=60)
    assert answer.status_code == 200, answer.text
    check_top5(answer.json()["predictions"])
