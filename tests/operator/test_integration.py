"""The real operator (kopf runtime, console command) against a real Kubernetes control plane.

The operator runs as deploy/'s ServiceAccount, so the API server enforces its ClusterRole; the
real Deployment, ReplicaSet, garbage-collector and HPA controllers and the scheduler run. No
kubelet and no cloud provider run: where they would report pods running or crash-looping, or a
load balancer's address, the `kubelet` fixture writes that status as they would.
"""

import time
from pathlib import Path
from typing import Any

import requests
from control_plane import OPERATOR_USER, WRITE_VERBS, ControlPlane, rbac_triple
from kubelet import Kubelet
from operators import Namespace, OperatorProcess

WAIT = 30  # seconds: real controllers and a shared, busy machine
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def env_of(deployment: dict[str, Any]) -> dict[str, str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {var["name"]: var.get("value", "") for var in container["env"]}


def container_of(deployment: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return result


def operator_writes(plane: ControlPlane, namespace: str) -> list[tuple[str, str, str]]:
    """The operator's writes in `namespace`, as the API server's audit log recorded them."""
    return [
        triple
        for event in plane.audit_events(OPERATOR_USER)
        if event.get("objectRef", {}).get("namespace") == namespace
        and (triple := rbac_triple(event)) is not None
        and triple[2] in WRITE_VERBS
    ]


def serve(ns: Namespace, kubelet: Kubelet, name: str, replicas: int) -> None:
    """Play a kubelet running every pod of the classifier, and a cloud giving it an address."""
    kubelet.add_node()
    for pod in kubelet.wait_pods(ns, name, replicas):
        kubelet.run(ns, pod["metadata"]["name"])
    kubelet.assign_ingress(ns, name)


def test_operator_serves_liveness(plane_operator: OperatorProcess) -> None:
    assert plane_operator.process.poll() is None
    assert requests.get(plane_operator.liveness_url, timeout=5).status_code == 200


def test_kubectl_apply_of_the_minimal_example(plane_ns: Namespace, plane: ControlPlane) -> None:
    """The user's path: real kubectl applies examples/minimal.yaml (validated against the CRD's
    schema by the API server); the operator takes over."""
    ns = plane_ns
    plane.kubectl("apply", "-n", ns.name, "-f", str(EXAMPLES / "minimal.yaml"))
    deployment = ns.wait_for("deployments", "resnet", timeout=WAIT)
    assert env_of(deployment)["MODEL_NAME"] == "resnet50"
    assert ns.wait_for("services", "resnet", timeout=WAIT)["spec"]["type"] == "LoadBalancer"
    # No node: the real scheduler cannot place the pod, and the status says so.
    ns.wait_condition("resnet", "Ready", "False", "Unschedulable", timeout=WAIT)


def test_create_makes_owned_deployment_and_service(plane_ns: Namespace) -> None:
    ns = plane_ns
    ic = ns.create_classifier("cats", {"replicas": 2, "server": {"topK": 3}})
    uid = ic["metadata"]["uid"]

    deployment = ns.wait_for("deployments", "cats", timeout=WAIT)
    service = ns.wait_for("services", "cats", timeout=WAIT)

    for child in (deployment, service):
        (ref,) = child["metadata"]["ownerReferences"]
        assert ref["uid"] == uid and ref["controller"] is True and ref["kind"] == "ImageClassifier"
        assert (
            child["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kubeclassify-operator"
        )
    assert deployment["spec"]["replicas"] == 2
    container = container_of(deployment)
    assert container["image"] == "ghcr.io/kubeclassify/modelserver:0.1.0"
    assert {"name": "http", "containerPort": 5000, "protocol": "TCP"} in container["ports"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert env_of(deployment)["TOP_K"] == "3"
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["ports"][0]["port"] == 80
    assert service["spec"]["ports"][0]["targetPort"] == "http"

    ready = ns.wait_condition("cats", "Ready", "False", "Unschedulable", timeout=WAIT)
    assert "cats-" in ready["message"]  # names a pod the real ReplicaSet controller made
    status = (ns.get("imageclassifiers", "cats") or {})["status"]
    assert (
        status["selector"] == "app.kubernetes.io/instance=cats,app.kubernetes.io/name=kubeclassify"
    )
    assert status["observedGeneration"] == 1
    ns.cluster.wait(
        lambda: {"Created", "Unschedulable"} <= {e["reason"] for e in ns.events("cats")},
        WAIT,
        "Created and Unschedulable Events",
    )
    # No finalizer: deleting the classifier must never wait for the operator.
    assert "finalizers" not in (ns.get("imageclassifiers", "cats") or {})["metadata"]


def test_a_settled_classifier_causes_no_writes(
    plane_ns: Namespace, kubelet: Kubelet, plane: ControlPlane
) -> None:
    """Level-based and idempotent: with nothing changing, passes change nothing (counted in
    the API server's audit log, so a no-op patch counts too)."""
    ns = plane_ns
    ns.create_classifier("calm", {"replicas": 1})
    ns.wait_for("deployments", "calm", timeout=WAIT)
    serve(ns, kubelet, "calm", 1)
    ns.wait_condition("calm", "Ready", "True", "AllReplicasReady", timeout=WAIT)
    time.sleep(2)  # let the passes triggered by the last changes finish
    writes = len(operator_writes(plane, ns.name))
    events = len(ns.events("calm"))
    # A pod event with nothing new in it (the kubelet's heartbeat-like rewrite) starts a pass.
    (pod,) = ns.pods("calm")
    kubelet.run(ns, pod["metadata"]["name"])
    time.sleep(3)
    assert operator_writes(plane, ns.name)[writes:] == []
    assert len(ns.events("calm")) == events


def test_spec_change_updates_children(plane_ns: Namespace) -> None:
    ns = plane_ns
    ns.create_classifier("dogs", {"nodeSelector": {"pool": "cpu"}})
    ns.wait_for("deployments", "dogs", timeout=WAIT)
    ns.cluster.patch(
        ns.path("imageclassifiers", "dogs"),
        {
            "spec": {
                "image": "registry.example/modelserver:0.2.0",
                "replicas": 3,
                "nodeSelector": None,
                "server": {"maxBatchSize": 32},
                "service": {"type": "ClusterIP", "port": 8080},
            }
        },
    )

    deployment = ns.wait_for(
        "deployments",
        "dogs",
        lambda d: container_of(d)["image"] == "registry.example/modelserver:0.2.0",
        "the new image",
        timeout=WAIT,
    )
    assert deployment["spec"]["replicas"] == 3
    assert env_of(deployment)["BATCH_MAX_SIZE"] == "32"
    assert "nodeSelector" not in deployment["spec"]["template"]["spec"]
    service = ns.wait_for(
        "services", "dogs", lambda s: s["spec"]["type"] == "ClusterIP", timeout=WAIT
    )
    assert service["spec"]["ports"][0]["port"] == 8080
    ic = ns.wait_for(
        "imageclassifiers",
        "dogs",
        lambda o: o.get("status", {}).get("observedGeneration") == 2,
        timeout=WAIT,
    )
    assert ic["status"]["endpoint"] == f"dogs.{ns.name}.svc.cluster.local:8080"
    assert ic["status"]["url"] == f"http://dogs.{ns.name}.svc.cluster.local:8080/predict"


def test_deleted_or_edited_children_are_restored(plane_ns: Namespace) -> None:
    ns = plane_ns
    ns.create_classifier("birds", {})
    first = ns.wait_for("deployments", "birds", timeout=WAIT)
    ns.wait_for("services", "birds", timeout=WAIT)

    ns.cluster.delete(ns.path("deployments", "birds"))
    ns.cluster.delete(ns.path("services", "birds"))
    again = ns.wait_for(
        "deployments",
        "birds",
        lambda d: d["metadata"]["uid"] != first["metadata"]["uid"],
        "a new Deployment",
        timeout=WAIT,
    )
    ns.wait_for("services", "birds", timeout=WAIT)
    assert container_of(again)["image"] == container_of(first)["image"]

    ns.cluster.patch(
        ns.path("deployments", "birds"),
        {
            "spec": {
                "template": {"spec": {"containers": [{"name": "modelserver", "image": "evil"}]}}
            }
        },
    )
    restored = ns.wait_for(
        "deployments",
        "birds",
        lambda d: container_of(d)["image"] == container_of(first)["image"],
        "the hand-edited image to be restored",
        timeout=WAIT,
    )
    assert container_of(restored)["readinessProbe"]["httpGet"]["path"] == "/readyz"

    ns.cluster.patch(ns.path("services", "birds"), {"spec": {"type": "NodePort"}})
    ns.wait_for(
        "services", "birds", lambda s: s["spec"]["type"] == "LoadBalancer", "type restored", WAIT
    )


def test_status_follows_the_pods_as_a_kubelet_reports_them(
    plane_ns: Namespace, kubelet: Kubelet
) -> None:
    ns = plane_ns
    ns.create_classifier("fish", {"replicas": 2})
    ns.wait_for("deployments", "fish", timeout=WAIT)
    unavailable = ns.wait_condition(
        "fish", "DeploymentAvailable", "False", "MinimumReplicasUnavailable", timeout=WAIT
    )

    # Both pods run and turn ready; a cloud assigns the load balancer's address.
    serve(ns, kubelet, "fish", 2)
    ready = ns.wait_condition("fish", "Ready", "True", "AllReplicasReady", timeout=WAIT)
    ns.wait_condition("fish", "ServiceReady", "True", "EndpointAssigned", timeout=WAIT)
    available = ns.wait_condition(
        "fish", "DeploymentAvailable", "True", "MinimumReplicasAvailable", timeout=WAIT
    )
    assert available["lastTransitionTime"] >= unavailable["lastTransitionTime"]
    status = (ns.get("imageclassifiers", "fish") or {})["status"]
    assert status["ready"] == "2/2"
    assert status["endpoint"] == "203.0.113.7:80"
    assert status["url"] == "http://203.0.113.7:80/predict"

    # One pod starts crash-looping, as the kubelet would report it.
    crashing = ns.pods("fish")[0]["metadata"]["name"]
    kubelet.crash_loop(ns, crashing)
    crash = ns.wait_condition("fish", "Ready", "False", "CrashLoopBackOff", timeout=WAIT)
    assert crashing in crash["message"]
    assert crash["lastTransitionTime"] >= ready["lastTransitionTime"]
    assert any(
        e["type"] == "Warning" and e["reason"] == "CrashLoopBackOff" for e in ns.events("fish")
    )

    kubelet.run(ns, crashing)
    ns.wait_condition("fish", "Ready", "True", "AllReplicasReady", timeout=WAIT)


def test_autoscaling_on_and_off(plane_ns: Namespace) -> None:
    ns = plane_ns
    ns.create_classifier("owls", {"replicas": 2})
    ns.wait_for("deployments", "owls", timeout=WAIT)
    assert ns.get("horizontalpodautoscalers", "owls") is None

    ns.cluster.patch(
        ns.path("imageclassifiers", "owls"),
        {"spec": {"autoscaling": {"minReplicas": 2, "maxReplicas": 5}}},
    )
    hpa = ns.wait_for("horizontalpodautoscalers", "owls", timeout=WAIT)
    assert hpa["spec"]["minReplicas"] == 2 and hpa["spec"]["maxReplicas"] == 5
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "owls",
    }
    assert hpa["metadata"]["ownerReferences"][0]["kind"] == "ImageClassifier"
    ns.cluster.delete(ns.path("horizontalpodautoscalers", "owls"))
    ns.wait_for(
        "horizontalpodautoscalers",
        "owls",
        lambda h: h["metadata"]["uid"] != hpa["metadata"]["uid"],
        "the HPA to be recreated",
        timeout=WAIT,
    )

    # The HPA scales the Deployment (here: a hand standing in for it, within min..max, which the
    # real HPA controller, without metrics, leaves alone); the operator must leave it too.
    ns.cluster.patch(ns.path("deployments", "owls"), {"spec": {"replicas": 4}})
    ns.cluster.patch(ns.path("imageclassifiers", "owls"), {"spec": {"server": {"topK": 7}}})
    scaled = ns.wait_for(
        "deployments", "owls", lambda d: env_of(d)["TOP_K"] == "7", "TOP_K=7", timeout=WAIT
    )
    assert scaled["spec"]["replicas"] == 4

    ns.cluster.patch(
        ns.path("imageclassifiers", "owls"), {"spec": {"autoscaling": None, "replicas": 1}}
    )
    ns.cluster.wait(
        lambda: ns.get("horizontalpodautoscalers", "owls") is None, WAIT, "the HPA's removal"
    )
    ns.wait_for(
        "deployments", "owls", lambda d: d["spec"]["replicas"] == 1, "replicas back to 1", WAIT
    )


def test_invalid_spec_is_reported_without_children_or_retries(plane_ns: Namespace) -> None:
    """A spec the CRD's schema accepts but the operator cannot build: autoscaling without a CPU
    request (the API server took it, so only the operator can say what is wrong)."""
    ns = plane_ns
    ns.create_classifier(
        "bad", {"autoscaling": {"maxReplicas": 2}, "resources": {"requests": {"cpu": "0"}}}
    )
    cond = ns.wait_condition("bad", "Ready", "False", "InvalidSpec", timeout=WAIT)
    assert "resources.requests.cpu" in cond["message"]
    assert ns.get("deployments", "bad") is None
    assert ns.get("services", "bad") is None
    assert [e["type"] for e in ns.events("bad") if e["reason"] == "InvalidSpec"] == ["Warning"]

    # No hot retry loop: nothing is written to the classifier while nothing changes.
    settled = ns.get("imageclassifiers", "bad")
    events = len(ns.events("bad"))
    time.sleep(2)
    assert ns.get("imageclassifiers", "bad") == settled
    assert len(ns.events("bad")) == events

    ns.cluster.patch(
        ns.path("imageclassifiers", "bad"), {"spec": {"resources": {"requests": {"cpu": "1"}}}}
    )
    ns.wait_for("deployments", "bad", timeout=WAIT)
    ns.wait_condition("bad", "Ready", "False", "Unschedulable", timeout=WAIT)


def test_delete_leaves_children_to_garbage_collection(plane_ns: Namespace) -> None:
    """No finalizer, no delete handler: the real garbage collector removes the children (the
    API's default, background propagation), and the operator resurrects nothing."""
    ns = plane_ns
    ns.create_classifier("gone", {})
    ns.wait_for("deployments", "gone", timeout=WAIT)
    ns.wait_for("services", "gone", timeout=WAIT)
    ns.cluster.wait(lambda: ns.items_of("replicasets"), WAIT, "the ReplicaSet")

    ns.cluster.delete(ns.path("imageclassifiers", "gone"))
    assert ns.get("imageclassifiers", "gone") is None
    for kind in ("deployments", "services", "replicasets", "pods"):
        ns.wait_empty(kind, WAIT)
    time.sleep(2)
    assert ns.get("deployments", "gone") is None
    assert ns.get("services", "gone") is None
