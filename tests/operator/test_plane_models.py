"""Models, runtimes and gRPC on a real API server: the CRD's CEL rules refuse bad model sources
on `kubectl apply`, the real API server takes the Deployment with its download init container
and volumes, and the status follows what the (played) kubelet reports of the download."""

import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from classifiers import classifier
from control_plane import ControlPlane
from kubeclassify_operator.names import MODEL_SOURCE_HASH
from kubelet import Kubelet
from operators import Namespace

REPO = Path(__file__).resolve().parents[2]
WAIT = 30
SHA = "7aad0c74c5e3c06e5eb3c827e13304fdd68a83da6087d92ee169c24ff9fd4776"
SECRET_VALUE = "wJalrXUtnFEMI-not-a-real-key"
S3_SOURCE = {
    "storageUri": "s3://models/mobilenet/v2.tflite",
    "labelsUri": "s3://models/mobilenet/labels.txt",
    "sha256": SHA,
    "credentialsSecret": "s3-models",
}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            {"storageUri": "ftp://host/m.keras"},
            "spec.modelSource.storageUri: Invalid value: must start with s3://",
        ),
        ({"storageUri": "pvc:///m.keras"}, "pvc:// needs a claim name and a path"),
        ({"storageUri": "pvc://Bad_Claim/m.keras"}, "pvc:// needs a claim name and a path"),
        ({"storageUri": "s3://bucket-only.tflite"}, "expected s3://BUCKET/KEY"),
        ({"storageUri": "file://relative/m.keras"}, "expected file:///ABSOLUTE/PATH"),
        ({"storageUri": "pvc://models/../m.keras"}, "must not climb out"),
        (
            {"storageUri": "https://alice:hunter2@host/m.keras"},
            "must not carry credentials (user:password@)",
        ),
        (
            {"storageUri": "https://host/model"},
            "spec.modelSource.format: Invalid value: cannot tell the format",
        ),
        ({"storageUri": "s3://b/m.keras", "sha256": "abc"}, "spec.modelSource.sha256"),
        (
            {"storageUri": "pvc://models/m.keras", "sha256": SHA},
            "spec.modelSource.sha256: Invalid value: is checked while downloading",
        ),
        (
            {"storageUri": "file:///m.keras", "credentialsSecret": "s3"},
            "spec.modelSource.credentialsSecret: Invalid value: is only used to",
        ),
        (
            {"storageUri": "s3://b/m.keras", "labelsUri": "s3://b/labels.csv"},
            "spec.modelSource.labelsUri: Invalid value: must name a .txt",
        ),
        ({"storageUri": "s3://b/m.keras", "format": "onnx"}, "spec.modelSource.format"),
    ],
)
def test_kubectl_apply_refuses_bad_model_sources(
    plane: ControlPlane, plane_namespace: Namespace, source: dict[str, Any], expected: str
) -> None:
    done = plane.kubectl(
        "apply",
        "-n",
        plane_namespace.name,
        "-f",
        "-",
        stdin=classifier("bad", {"modelSource": source}),
        check=False,
    )
    assert done.returncode != 0, f"accepted: {done.stdout}"
    assert expected in done.stderr
    assert "hunter2" not in done.stderr
    assert plane_namespace.get("imageclassifiers", "bad") is None


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            {"env": [{"name": "MODEL_PRECISION", "value": "int8"}]},
            "spec.env[0].name: Forbidden: MODEL_PRECISION is set by the operator: set "
            "spec.runtime.precision instead",
        ),
        (
            {"env": [{"name": "MODEL_FILE", "value": "/x.keras"}]},
            "MODEL_FILE is set by the operator: set spec.modelSource instead",
        ),
        (
            {"env": [{"name": "GRPC_PORT", "value": "0"}]},
            "GRPC_PORT is set by the operator: set spec.server.grpc instead",
        ),
        ({"runtime": {"precision": "fp16"}}, 'spec.runtime.precision: Unsupported value: "fp16"'),
        (
            {"service": {"port": 8081}},
            "spec.service.port: Invalid value: must differ from service.grpcPort",
        ),
    ],
)
def test_kubectl_apply_refuses_runtime_and_grpc_nonsense(
    plane: ControlPlane, plane_namespace: Namespace, spec: dict[str, Any], expected: str
) -> None:
    done = plane.kubectl(
        "apply", "-n", plane_namespace.name, "-f", "-", stdin=classifier("bad", spec), check=False
    )
    assert done.returncode != 0, f"accepted: {done.stdout}"
    assert expected in done.stderr


def test_valid_sources_of_every_kind_are_accepted(
    plane: ControlPlane, plane_namespace: Namespace
) -> None:
    sources = [
        S3_SOURCE,
        {"storageUri": "gs://bucket/model.keras", "sizeLimit": "1Gi"},
        {"storageUri": "https://models.example/v1/model.xml"},
        {"storageUri": "https://models.example/m?X-Amz-Signature=1", "format": "tflite"},
        {"storageUri": "pvc://models/cats/v3.keras", "labelsUri": "pvc://models/cats.json"},
        {"storageUri": "file:///opt/models/cats.tflite"},
    ]
    for index, source in enumerate(sources):
        plane.kubectl(
            "apply",
            "--dry-run=server",
            "-n",
            plane_namespace.name,
            "-f",
            "-",
            stdin=classifier(f"ok-{index}", {"modelSource": source}),
        )


def container(pod_spec: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(
        c for c in pod_spec.get("initContainers", []) + pod_spec["containers"] if c["name"] == name
    )
    return found


def env_of(c: dict[str, Any]) -> dict[str, str]:
    return {var["name"]: var.get("value", "") for var in c.get("env", [])}


def make_secret(ns: Namespace) -> None:
    ns.cluster.create(
        f"/api/v1/namespaces/{ns.name}/secrets",
        {
            "metadata": {"name": "s3-models"},
            "stringData": {"AWS_ACCESS_KEY_ID": "AKIA-TEST", "AWS_SECRET_ACCESS_KEY": SECRET_VALUE},
        },
    )


def test_an_s3_source_becomes_a_download_init_container(plane_ns: Namespace) -> None:
    ns = plane_ns
    make_secret(ns)
    ns.create_classifier("own", {"modelSource": S3_SOURCE, "runtime": {"precision": "int8"}})
    deployment = ns.wait_for("deployments", "own", timeout=WAIT)
    pod = deployment["spec"]["template"]["spec"]
    fetch = container(pod, "fetch-model")
    assert fetch["command"] == ["modelserver", "fetch"]
    assert fetch["args"][:4] == [S3_SOURCE["storageUri"], "/models/v2.tflite", "--sha256", SHA]
    assert fetch["envFrom"] == [{"secretRef": {"name": "s3-models"}}]
    assert fetch["terminationMessagePolicy"] == "FallbackToLogsOnError"
    server = container(pod, "modelserver")
    assert {"name": "model", "mountPath": "/models", "readOnly": True} in server["volumeMounts"]
    volume = next(v for v in pod["volumes"] if v["name"] == "model")
    assert volume["emptyDir"]["sizeLimit"] == "2Gi"
    env = env_of(server)
    assert env["MODEL_FILE"] == "/models/v2.tflite"
    assert env["MODEL_LABELS"] == "/models/labels.txt"
    assert (env["MODEL_BACKEND"], env["MODEL_PRECISION"]) == ("auto", "int8")
    # The Secret's values are nowhere in what the operator wrote.
    assert SECRET_VALUE not in yaml.safe_dump(deployment)
    ic = ns.wait_for(
        "imageclassifiers", "own", lambda ic: "model" in ic.get("status", {}), "status.model", WAIT
    )
    assert ic["status"]["model"]["summary"] == "s3://models/mobilenet/v2.tflite (int8)"


def test_a_pvc_source_mounts_the_claim_read_only(plane_ns: Namespace) -> None:
    ns = plane_ns
    ns.create_classifier("onpvc", {"modelSource": {"storageUri": "pvc://models/cats/v3.keras"}})
    pod = ns.wait_for("deployments", "onpvc", timeout=WAIT)["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert {
        "name": "claim-0",
        "persistentVolumeClaim": {"claimName": "models", "readOnly": True},
    } in (pod["volumes"])
    assert env_of(container(pod, "modelserver"))["MODEL_FILE"] == "/mnt/pvc/models/cats/v3.keras"


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def report_download(
    ns: Namespace,
    kubelet: Kubelet,
    pod: dict[str, Any],
    fetch_state: dict[str, Any],
    server_state: dict[str, Any],
) -> None:
    """Write the pod's status as the kubelet would once its init container ran: the server's
    container (ready once running), then the init container's state."""
    name = pod["metadata"]["name"]
    kubelet.container_status(ns, name, server_state, ready="running" in server_state)
    statuses = [
        {
            "name": init["name"],
            "image": init["image"],
            "imageID": "",
            "ready": False,
            "restartCount": 0,
            "state": fetch_state,
        }
        for init in pod["spec"]["initContainers"]
    ]
    ns.cluster.patch(
        ns.path("pods", name, "status"), {"status": {"initContainerStatuses": statuses}}
    )


def test_a_failed_download_is_model_download_failed_and_a_good_one_is_status_model(
    plane_ns: Namespace, kubelet: Kubelet
) -> None:
    ns = plane_ns
    make_secret(ns)
    ns.create_classifier("dl", {"modelSource": S3_SOURCE})
    kubelet.add_node(f"node-{ns.name}")
    (pod,) = kubelet.wait_pods(ns, "dl", 1)
    failed = {
        "terminated": {
            "exitCode": 1,
            "reason": "Error",
            "startedAt": now(),
            "finishedAt": now(),
            "message": "modelserver fetch: s3://models/mobilenet/v2.tflite: the secret key does"
            " not match the access key (AWS_SECRET_ACCESS_KEY)\n",
        }
    }
    report_download(ns, kubelet, pod, failed, {"waiting": {"reason": "PodInitializing"}})
    cond = ns.wait_condition("dl", "Ready", "False", "ModelDownloadFailed", timeout=WAIT)
    assert "fetch-model failed" in cond["message"]
    assert "the secret key does not match the access key" in cond["message"]
    assert SECRET_VALUE not in str(ns.get("imageclassifiers", "dl"))
    assert any(e["reason"] == "ModelDownloadFailed" for e in ns.events("dl"))

    fetched = {
        "terminated": {
            "exitCode": 0,
            "reason": "Completed",
            "startedAt": now(),
            "finishedAt": now(),
            "message": f"fetched s3://models/mobilenet/v2.tflite to /models/v2.tflite: "
            f"3577760 bytes, sha256 {SHA}\nfetched s3://models/mobilenet/labels.txt to "
            f"/models/labels.txt: 10484 bytes, sha256 {'0' * 64}\n",
        }
    }
    report_download(ns, kubelet, pod, fetched, {"running": {"startedAt": now()}})
    ns.wait_for("services", "dl", timeout=WAIT)
    kubelet.assign_ingress(ns, "dl", "203.0.113.21")
    ns.wait_condition("dl", "Ready", "True", "AllReplicasReady", timeout=WAIT)
    status = (ns.get("imageclassifiers", "dl") or {})["status"]
    assert status["model"] == {
        "name": "v2",
        "source": "s3://models/mobilenet/v2.tflite",
        "format": "tflite",
        "sha256": SHA,
        "backend": "auto",
        "precision": "auto",
        "summary": "s3://models/mobilenet/v2.tflite (auto)",
    }
    assert status["grpcEndpoint"] == "203.0.113.21:8081"


def test_a_model_that_cannot_load_is_model_load_failed(
    plane_ns: Namespace, kubelet: Kubelet
) -> None:
    ns = plane_ns
    ns.create_classifier("broken", {"modelSource": {"storageUri": "file:///opt/bad.keras"}})
    kubelet.add_node(f"node-{ns.name}")
    (pod,) = kubelet.wait_pods(ns, "broken", 1)
    log_tail = (
        "[INFO] Booting worker with pid: 7\n"
        "[CRITICAL] modelserver.service: cannot serve: MODEL_FILE=/opt/bad.keras cannot be "
        "loaded: File not found\n[INFO] Shutting down: Master\n"
    )
    kubelet.container_status(
        ns,
        pod["metadata"]["name"],
        {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s"}},
        restarts=2,
        last_state={"terminated": {"exitCode": 3, "reason": "Error", "message": log_tail}},
    )
    cond = ns.wait_condition("broken", "Ready", "False", "ModelLoadFailed", timeout=WAIT)
    assert "MODEL_FILE=/opt/bad.keras cannot be loaded: File not found" in cond["message"]


def test_grpc_ports_and_the_runtime_reach_the_children(plane_ns: Namespace) -> None:
    ns = plane_ns
    ns.create_classifier(
        "rpc",
        {"runtime": {"backend": "openvino", "precision": "bf16"}, "service": {"grpcPort": 9000}},
    )
    pod = ns.wait_for("deployments", "rpc", timeout=WAIT)["spec"]["template"]["spec"]
    server = container(pod, "modelserver")
    assert {"name": "grpc", "containerPort": 8081, "protocol": "TCP"} in server["ports"]
    env = env_of(server)
    assert (env["GRPC_PORT"], env["MODEL_BACKEND"], env["MODEL_PRECISION"]) == (
        "8081",
        "openvino",
        "bf16",
    )
    ports = ns.wait_for("services", "rpc", timeout=WAIT)["spec"]["ports"]
    grpc = next(p for p in ports if p["name"] == "grpc")
    assert (grpc["port"], grpc["targetPort"], grpc["appProtocol"]) == (
        9000,
        "grpc",
        "kubernetes.io/h2c",
    )
    # Turned off: no grpc port anywhere, GRPC_PORT=0.
    ns.cluster.patch(ns.path("imageclassifiers", "rpc"), {"spec": {"server": {"grpc": False}}})
    services = ns.wait_for(
        "services", "rpc", lambda s: len(s["spec"]["ports"]) == 1, "one port", WAIT
    )
    assert services["spec"]["ports"][0]["name"] == "http"
    deployment = ns.wait_for(
        "deployments",
        "rpc",
        lambda d: (
            env_of(container(d["spec"]["template"]["spec"], "modelserver"))["GRPC_PORT"] == "0"
        ),
        "GRPC_PORT=0",
        WAIT,
    )
    names = [
        p["name"] for p in container(deployment["spec"]["template"]["spec"], "modelserver")["ports"]
    ]
    assert names == ["http"]


def test_the_own_model_example_applies(plane: ControlPlane, plane_ns: Namespace) -> None:
    ns = plane_ns
    plane.kubectl("apply", "-n", ns.name, "-f", str(REPO / "examples" / "own-model-s3.yaml"))
    pod = ns.wait_for("deployments", "mobilenet", timeout=WAIT)["spec"]["template"]["spec"]
    assert container(pod, "fetch-model")["envFrom"] == [{"secretRef": {"name": "s3-models"}}]


def test_a_changed_source_rolls_the_pods_and_an_unchanged_one_does_not(
    plane_ns: Namespace,
) -> None:
    ns = plane_ns
    ns.create_classifier("roll", {"modelSource": S3_SOURCE})
    first = ns.wait_for("deployments", "roll", timeout=WAIT)
    ns.cluster.wait(lambda: len(ns.items_of("replicasets")) == 1, WAIT, "the first ReplicaSet")
    annotations = first["spec"]["template"]["metadata"]["annotations"]
    # A change beside the source (a new replica count) keeps the pod template: no new pods.
    ns.cluster.patch(ns.path("imageclassifiers", "roll"), {"spec": {"replicas": 2}})
    scaled = ns.wait_for(
        "deployments", "roll", lambda d: d["spec"]["replicas"] == 2, "2 replicas", WAIT
    )
    assert scaled["spec"]["template"]["metadata"]["annotations"] == annotations
    assert len(ns.items_of("replicasets")) == 1
    # A new sha256 (new contents under the same URI): a new template, rolled out.
    new_sha = "0" * 64
    ns.cluster.patch(
        ns.path("imageclassifiers", "roll"), {"spec": {"modelSource": {"sha256": new_sha}}}
    )
    rolled = ns.wait_for(
        "deployments",
        "roll",
        lambda d: new_sha in str(d["spec"]["template"]["spec"]["initContainers"][0]["args"]),
        "the new sha256",
        WAIT,
    )
    new_annotations = rolled["spec"]["template"]["metadata"]["annotations"]
    assert new_annotations[MODEL_SOURCE_HASH] != annotations[MODEL_SOURCE_HASH]
    ns.cluster.wait(lambda: len(ns.items_of("replicasets")) == 2, WAIT, "a new ReplicaSet")
