"""The README's path on a real node: its "Deploy on Kubernetes" commands, run as written (only
the image swapped: seeded ResNet50 weights baked in), and what a client gets. The operator is
installed by the `operator_installed` fixture; then `kubectl apply -f examples/minimal.yaml`
becomes Ready (`kubectl wait`), `kubectl get ic` prints what the README says, the README's `curl`
of `status.url` answers, and `kubectl scale` to 3 gives 3 ready replicas. It answers every
protocol through its Service: /predict, V1 and V2 REST on the `http` port's nodePort, gRPC on
the `grpc` port's, both on 127.0.0.1.

Seeded weights give random labels: the tests check the contract, never which label."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
import yaml
from control_plane import REPO_ROOT, tools_dir
from node import NODE_IP, NodeCluster
from oip_grpc import call

NAME = "resnet"  # examples/minimal.yaml's
MODEL = "resnet50"
DOG = (REPO_ROOT / "examples" / "images" / "dog.jpg").read_bytes()
CLASS_INDEX = REPO_ROOT / "modelserver" / "modelserver" / "data" / "imagenet_class_index.json"
CLASSES = json.loads(CLASS_INDEX.read_text())  # "index": [wordnet id, label]
LABELS = {label for _, label in CLASSES.values()}  # 998: two labels name two classes each

# The README's deploy block (the one after this marker), line by line, and who runs each here.
MARKER = "<!-- tested: tests/e2e/test_readme_path.py -->"
INSTALL = "kubectl apply -k deploy/"  # operator_installed: tests/e2e/overlay, the image swapped
ROLLOUT = "kubectl -n kubeclassify-system rollout status deployment/kubeclassify-operator"  # idem
APPLY = "kubectl apply -f examples/minimal.yaml"  # the file's image swapped, on stdin
GET = "kubectl get ic"
WAIT = "kubectl wait --for=condition=Ready ic/resnet --timeout=5m"
CURL = (
    "curl -F image=@examples/images/dog.jpg "
    "\"$(kubectl get ic resnet -o jsonpath='{.status.url}')\""
)
SCALE = "kubectl scale ic/resnet --replicas=3"


def readme_block() -> list[tuple[str, str]]:
    """The README's deploy commands after MARKER: (command, its comment), in order."""
    readme = (REPO_ROOT / "README.md").read_text()
    block = readme.split(f"{MARKER}\n```sh\n", 1)[1].split("```", 1)[0]
    lines = (re.split(r"\s+# ", line, maxsplit=1) for line in block.splitlines())
    return [(parts[0].strip(), parts[1] if len(parts) > 1 else "") for parts in lines]


@dataclass(frozen=True)
class Shell:
    """Runs README lines as written: bash in the repository root, the plane's kubectl on PATH,
    a kubeconfig (the admin's) whose current namespace is the test's, and no proxy: curl goes
    straight to the address it is given."""

    env: dict[str, str]

    @classmethod
    def in_namespace(cls, node_cluster: NodeCluster, namespace: str, workdir: Path) -> Shell:
        config = yaml.safe_load(node_cluster.plane.admin_kubeconfig.read_text())
        (context,) = (c for c in config["contexts"] if c["name"] == config["current-context"])
        context["context"]["namespace"] = namespace
        kubeconfig = workdir / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(config))
        kubeconfig.chmod(0o600)
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        env["PATH"] = f"{tools_dir()}{os.pathsep}{env.get('PATH', '')}"
        env["KUBECONFIG"] = str(kubeconfig)
        return cls(env)

    def run(self, line: str, stdin: str = "") -> str:
        """The line's output; fails with its stderr if it exits non-zero."""
        done = subprocess.run(
            ["bash", "-c", line],
            cwd=REPO_ROOT,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=330,
        )
        assert done.returncode == 0, f"{line}: exit {done.returncode}: {done.stderr}"
        return done.stdout


@dataclass(frozen=True)
class Served:
    """The classifier as a client sees it: its status, where its Service answers, and a shell
    for the README's commands in its namespace."""

    classifier: dict[str, Any]
    url: str  # http://127.0.0.1:<nodePort of the http port>
    grpc_target: str  # 127.0.0.1:<nodePort of the grpc port>
    namespace: str
    shell: Shell


@pytest.fixture(scope="module")
def resnet(
    node_cluster: NodeCluster, operator_installed: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    with node_cluster.namespace() as namespace:
        shell = Shell.in_namespace(node_cluster, namespace, tmp_path_factory.mktemp("readme"))
        manifest = node_cluster.example("minimal")
        assert manifest["metadata"]["name"] == NAME
        started = time.monotonic()
        shell.run(APPLY.replace("examples/minimal.yaml", "-"), stdin=json.dumps(manifest))
        # Its pod ready, it says what it still lacks: this node has no load-balancer provider.
        node_cluster.wait_condition(
            NAME, namespace, status="False", reason="LoadBalancerPending", timeout=600
        )
        print(f"\nkubectl apply to a ready pod: {time.monotonic() - started:.1f} s")
        node_cluster.assign_load_balancer(NAME, namespace)
        shell.run(WAIT)
        print(f"kubectl apply to Ready: {time.monotonic() - started:.1f} s")
        classifier = node_cluster.get("imageclassifier", NAME, namespace)
        assert classifier is not None
        yield Served(
            classifier,
            node_cluster.url(NAME, namespace),
            f"127.0.0.1:{node_cluster.node_port(NAME, 'grpc', namespace)}",
            namespace,
            shell,
        )


def test_the_readmes_deploy_block_is_what_this_module_runs() -> None:
    """Each command of the README's block is run here (or by operator_installed), as written."""
    commands = [command for command, _ in readme_block()]
    assert commands == [INSTALL, ROLLOUT, APPLY, GET, WAIT, CURL, SCALE]


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


def test_kubectl_get_ic_prints_the_readmes_columns(resnet: Served) -> None:
    """`kubectl get ic`: the columns the README's comment names, and the classifier's row."""
    [(_, columns)] = [(c, comment) for c, comment in readme_block() if c == GET]
    header, row = (line.split() for line in resnet.shell.run(GET).splitlines())
    assert header == ["NAME", *columns.split(", ")]
    # MODEL is "resnet50 (auto)": two words
    assert row[:7] == [NAME, MODEL, "(auto)", "1", "1/1", f"{NODE_IP}:80", "AllReplicasReady"]


def test_the_readmes_curl_of_the_status_url(resnet: Served) -> None:
    """The README's `curl` of `status.url`: the load balancer's address is the node IP, served
    by kube-proxy."""
    assert resnet.classifier["status"]["url"] == f"http://{NODE_IP}:80/predict"
    answer = json.loads(resnet.shell.run(CURL))
    assert answer["success"] is True, answer
    check_top5(answer["predictions"])


def test_the_readmes_scale_gives_three_ready_replicas(
    node_cluster: NodeCluster, resnet: Served, http: requests.Session
) -> None:
    """`kubectl scale ic/resnet --replicas=3`, then the README's `kubectl wait` again: it waits
    for the status of the new generation (its observedGeneration), so Ready means 3 of 3. Last:
    the other tests see one replica. 3 x 500m of CPU requests fit the node's 2 cores."""
    assert resnet.shell.run(SCALE).strip() == f"imageclassifier.kubeclassify.io/{NAME} scaled"
    resnet.shell.run(WAIT)
    classifier = node_cluster.get("imageclassifier", NAME, resnet.namespace) or {}
    [ready] = [c for c in classifier["status"]["conditions"] if c["type"] == "Ready"]
    assert ready["observedGeneration"] == classifier["metadata"]["generation"]
    assert ready["message"].startswith("3/3 replicas are ready"), ready
    pods = node_cluster.pods(resnet.namespace, f"app.kubernetes.io/instance={NAME}")
    assert len(pods) == 3
    answer = http.post(f"{resnet.url}/predict", files={"image": ("dog.jpg", DOG)}, timeout=60)
    assert answer.status_code == 200, answer.text
