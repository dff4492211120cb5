"""The real operator (kopf runtime, console command) against kmock's emulator over HTTP.

The emulator has no controllers: where Kubernetes would make a Deployment available or a
pod crash-loop, the test writes that state itself, as the kubelet and controllers would.
"""

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

# `ns` is conftest's Namespace helper; test modules cannot import conftest, hence Any.
Namespace = Any


def env_of(deployment: dict[str, Any]) -> dict[str, str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {var["name"]: var.get("value", "") for var in container["env"]}


def container_of(deployment: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return result


def test_operator_serves_liveness(operator_process: Any) -> None:
    assert operator_process.process.poll() is None
    assert requests.get(operator_process.liveness_url, timeout=5).status_code == 200


def test_kubectl_apply_of_the_minimal_example(ns: Namespace, kubeconfig: Path) -> None:
    """The user's path: real kubectl applies examples/minimal.yaml; the operator takes over."""
    kubectl = Path(sys.executable).parent / "kubectl"
    example = Path(__file__).resolve().parents[2] / "examples" / "minimal.yaml"
    subprocess.run(
        # --validate=false: the emulator serves no OpenAPI document to validate against.
        [str(kubectl), "apply", "--validate=false", "-n", ns.name, "-f", str(example)],
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        check=True,
        capture_output=True,
    )
    deployment = ns.wait_for("deployments", "resnet")
    assert env_of(deployment)["MODEL_NAME"] == "resnet50"
    assert ns.wait_for("services", "resnet")["spec"]["type"] == "LoadBalancer"
    ns.wait_condition("resnet", "Ready", "False", "ReplicasNotReady")


def test_create_makes_owned_deployment_and_service(ns: Namespace) -> None:
    ic = ns.create_classifier("cats", {"replicas": 2, "server": {"topK": 3}})
    uid = ic["metadata"]["uid"]

    deployment = ns.wait_for("deployments", "cats")
    service = ns.wait_for("services", "cats")

    for child in (deployment, service):
        (ref,) = child["metadata"]["ownerReferences"]
        assert ref["uid"] == uid and ref["controller"] is True and ref["kind"] == "ImageClassifier"
        assert (
            child["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kubeclassify-operator"
        )
    assert deployment["spec"]["replicas"] == 2
    container = container_of(deployment)
    assert container["image"] == "ghcr.io/kubeclassify/modelserver:0.1.0"
    assert container["ports"] == [{"name": "http", "containerPort": 5000, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert env_of(deployment)["TOP_K"] == "3"
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["ports"][0]["port"] == 80
    assert service["spec"]["ports"][0]["targetPort"] == "http"

    ready = ns.wait_condition("cats", "Ready", "False", "ReplicasNotReady")
    assert ready["message"] == "0/2 replicas are ready"
    status = (ns.get("imageclassifiers", "cats") or {})["status"]
    assert (
        status["selector"] == "app.kubernetes.io/instance=cats,app.kubernetes.io/name=kubeclassify"
    )
    assert status["observedGeneration"] == 1
    reasons = {event["reason"] for event in ns.events("cats")}
    assert {"Created", "ReplicasNotReady"} <= reasons
    # No finalizer: deleting the classifier must never wait for the operator.
    assert "finalizers" not in (ns.get("imageclassifiers", "cats") or {})["metadata"]


def test_a_settled_classifier_causes_no_writes(ns: Namespace) -> None:
    """Level-based and idempotent: with nothing changing, passes change nothing."""
    ns.create_classifier("calm", {"replicas": 1})
    ns.wait_for("deployments", "calm")
    ns.cluster.patch(
        ns.path("deployments", "calm", "status"),
        {"status": {"readyReplicas": 1, "conditions": [{"type": "Available", "status": "True"}]}},
    )
    ns.wait_condition("calm", "Ready", "True", "AllReplicasReady")
    time.sleep(0.5)  # let the passes triggered by our own writes finish
    kinds = ("imageclassifiers", "deployments", "services")
    before = [ns.get(kind, "calm") for kind in kinds]
    events = len(ns.events("calm"))
    # An unrelated pod event makes the operator run a full pass again.
    ns.cluster.create(
        ns.path("pods"),
        {
            "metadata": {
                "name": "calm-1",
                "namespace": ns.name,
                "labels": {
                    "app.kubernetes.io/name": "kubeclassify",
                    "app.kubernetes.io/instance": "calm",
                    "app.kubernetes.io/managed-by": "kubeclassify-operator",
                },
            },
            "status": {"containerStatuses": [{"name": "modelserver", "state": {"running": {}}}]},
        },
    )
    time.sleep(1.5)
    assert [ns.get(kind, "calm") for kind in kinds] == before
    assert len(ns.events("calm")) == events


def test_spec_change_updates_children(ns: Namespace) -> None:
    ns.create_classifier("dogs", {"nodeSelector": {"pool": "cpu"}})
    ns.wait_for("deployments", "dogs")
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
    )
    assert deployment["spec"]["replicas"] == 3
    assert env_of(deployment)["BATCH_MAX_SIZE"] == "32"
    assert "nodeSelector" not in deployment["spec"]["template"]["spec"]
    service = ns.wait_for("services", "dogs", lambda s: s["spec"]["type"] == "ClusterIP")
    assert service["spec"]["ports"][0]["port"] == 8080
    ic = ns.wait_for(
        "imageclassifiers", "dogs", lambda o: o.get("status", {}).get("observedGeneration") == 2
    )
    assert ic["status"]["endpoint"] == f"dogs.{ns.name}.svc.cluster.local:8080"
    assert ic["status"]["url"] == f"http://dogs.{ns.name}.svc.cluster.local:8080/predict"


def test_deleted_or_edited_children_are_restored(ns: Namespace) -> None:
    ns.create_classifier("birds", {})
    first = ns.wait_for("deployments", "birds")
    ns.wait_for("services", "birds")

    ns.cluster.delete(ns.path("deployments", "birds"))
    ns.cluster.delete(ns.path("services", "birds"))
    again = ns.wait_for("deployments", "birds", timeout=5)
    ns.wait_for("services", "birds", timeout=5)
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
        timeout=5,
    )
    assert container_of(restored)["readinessProbe"]["httpGet"]["path"] == "/readyz"

    ns.cluster.patch(ns.path("services", "birds"), {"spec": {"type": "NodePort"}})
    ns.wait_for(
        "services", "birds", lambda s: s["spec"]["type"] == "LoadBalancer", "type restored", 5
    )


def test_status_follows_deployment_service_and_pods(ns: Namespace) -> None:
    ns.create_classifier("fish", {"replicas": 2})
    ns.wait_for("deployments", "fish")
    deployment_available = ns.wait_condition("fish", "DeploymentAvailable", "Unknown", "Pending")

    # What the Deployment controller and the cloud load balancer would report.
    ns.cluster.patch(
        ns.path("deployments", "fish", "status"),
        {
            "status": {
                "replicas": 2,
                "readyReplicas": 2,
                "conditions": [
                    {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}
                ],
            }
        },
    )
    ns.cluster.patch(
        ns.path("services", "fish", "status"),
        {"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}},
    )
    ready = ns.wait_condition("fish", "Ready", "True", "AllReplicasReady")
    ns.wait_condition("fish", "ServiceReady", "True", "EndpointAssigned")
    available = ns.wait_condition("fish", "DeploymentAvailable", "True", "MinimumReplicasAvailable")
    assert available["lastTransitionTime"] >= deployment_available["lastTransitionTime"]
    status = (ns.get("imageclassifiers", "fish") or {})["status"]
    assert status["ready"] == "2/2"
    assert status["endpoint"] == "203.0.113.7:80"
    assert status["url"] == "http://203.0.113.7:80/predict"

    # A pod of this instance starts crash-looping, as the kubelet would report it.
    ns.cluster.create(
        ns.path("pods"),
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "fish-abc",
                "namespace": ns.name,
                "labels": {
                    "app.kubernetes.io/name": "kubeclassify",
                    "app.kubernetes.io/instance": "fish",
                    "app.kubernetes.io/managed-by": "kubeclassify-operator",
                },
            },
            "status": {
                "containerStatuses": [
                    {
                        "name": "modelserver",
                        "state": {
                            "waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}
                        },
                    }
                ]
            },
        },
    )
    crash = ns.wait_condition("fish", "Ready", "False", "CrashLoopBackOff")
    assert "fish-abc" in crash["message"]
    assert crash["lastTransitionTime"] >= ready["lastTransitionTime"]
    # The Deployment condition did not change, so its transition time is kept.
    still = ns.condition("fish", "DeploymentAvailable")
    assert still is not None and still["lastTransitionTime"] == available["lastTransitionTime"]
    assert any(
        e["type"] == "Warning" and e["reason"] == "CrashLoopBackOff" for e in ns.events("fish")
    )

    ns.cluster.delete(ns.path("pods", "fish-abc"))
    ns.wait_condition("fish", "Ready", "True", "AllReplicasReady")


def test_autoscaling_on_and_off(ns: Namespace) -> None:
    ns.create_classifier("owls", {"replicas": 2})
    ns.wait_for("deployments", "owls")
    assert ns.get("horizontalpodautoscalers", "owls") is None

    ns.cluster.patch(
        ns.path("imageclassifiers", "owls"),
        {"spec": {"autoscaling": {"minReplicas": 2, "maxReplicas": 5}}},
    )
    hpa = ns.wait_for("horizontalpodautoscalers", "owls")
    assert hpa["spec"]["minReplicas"] == 2 and hpa["spec"]["maxReplicas"] == 5
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "owls",
    }
    assert hpa["metadata"]["ownerReferences"][0]["kind"] == "ImageClassifier"
    ns.cluster.delete(ns.path("horizontalpodautoscalers", "owls"))
    ns.wait_for("horizontalpodautoscalers", "owls", what="the HPA to be recreated", timeout=5)

    # The HPA scales the Deployment; the operator must leave that number alone.
    ns.cluster.patch(ns.path("deployments", "owls"), {"spec": {"replicas": 4}})
    ns.cluster.patch(ns.path("imageclassifiers", "owls"), {"spec": {"server": {"topK": 7}}})
    scaled = ns.wait_for("deployments", "owls", lambda d: env_of(d)["TOP_K"] == "7", "TOP_K=7")
    assert scaled["spec"]["replicas"] == 4

    ns.cluster.patch(
        ns.path("imageclassifiers", "owls"), {"spec": {"autoscaling": None, "replicas": 1}}
    )
    ns.cluster.wait(
        lambda: ns.get("horizontalpodautoscalers", "owls") is None, what="the HPA's removal"
    )
    ns.wait_for("deployments", "owls", lambda d: d["spec"]["replicas"] == 1, "replicas back to 1")


def test_invalid_spec_is_reported_without_children_or_retries(ns: Namespace) -> None:
    ns.create_classifier("bad", {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}})
    cond = ns.wait_condition("bad", "Ready", "False", "InvalidSpec")
    assert "spec.autoscaling" in cond["message"]
    assert "minReplicas (5) must not exceed maxReplicas (2)" in cond["message"]
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
        ns.path("imageclassifiers", "bad"),
        {"spec": {"autoscaling": {"minReplicas": 1}}},
    )
    ns.wait_for("deployments", "bad")
    ns.wait_condition("bad", "Ready", "False", "ReplicasNotReady")


def test_delete_leaves_children_to_garbage_collection(ns: Namespace) -> None:
    ns.create_classifier("gone", {})
    ns.wait_for("deployments", "gone")
    ns.wait_for("services", "gone")

    ns.cluster.delete(ns.path("imageclassifiers", "gone"))
    assert ns.get("imageclassifiers", "gone") is None

    # The emulator has no garbage collector; a real cluster deletes the owned children.
    # The operator must not resurrect anything for a classifier that is gone.
    ns.cluster.delete(ns.path("deployments", "gone"))
    time.sleep(1.5)
    assert ns.get("deployments", "gone") is None
    assert ns.get("imageclassifiers", "gone") is None


def test_operator_registers_in_its_peering_object(operator_process: Any, cluster: Any) -> None:
    peering = cluster.wait(
        lambda: (cluster.get("/apis/kopf.dev/v1/clusterkopfpeerings/kubeclassify") or {}).get(
            "status"
        ),
        what="the operator's entry in the ClusterKopfPeering",
    )
    (entry,) = peering.values()
    assert "priority" in entry and "lastseen" in entry


def test_two_replicas_never_act_at_once(
    ns: Namespace, cluster: Any, launch_operator: Any, operator_process: Any
) -> None:
    peering_path = "/apis/kopf.dev/v1/clusterkopfpeerings/kubeclassify"
    second = launch_operator("operator-2")
    try:
        cluster.wait(
            lambda: len((cluster.get(peering_path) or {}).get("status", {})) == 2,
            what="both replicas in the peering object",
        )
        # Equal priorities: both replicas pause, so nobody creates the children.
        time.sleep(1)  # let both notice each other
        ns.create_classifier("peers", {})
        time.sleep(2)
        assert ns.get("deployments", "peers") is None
    finally:
        second.stop()
    # The second replica left the peering on exit; the first resumes and catches up.
    ns.wait_for("deployments", "peers", timeout=20)
    assert operator_process.process.poll() is None
