"""What a user sees through real kubectl on a real API server: the printer columns of
`kubectl get ic`, `kubectl scale` through the scale subresource down to the pods the real
Deployment and ReplicaSet controllers make, and unknown fields pruned from what is stored."""

import json
from typing import Any

from control_plane import ControlPlane
from kubeclassify_operator.spec import GROUP, KIND, VERSION
from kubelet import Kubelet
from operators import Namespace

WAIT = 30


def test_kubectl_get_prints_the_columns_with_their_values(
    plane_ns: Namespace, plane: ControlPlane, kubelet: Kubelet
) -> None:
    ns = plane_ns
    ns.create_classifier("cols", {"replicas": 2})
    kubelet.add_node(f"node-{ns.name}")
    for pod in kubelet.wait_pods(ns, "cols", 2):
        kubelet.run(ns, pod["metadata"]["name"])
    ns.wait_for("services", "cols", timeout=WAIT)
    kubelet.assign_ingress(ns, "cols", "203.0.113.9")
    ns.wait_condition("cols", "Ready", "True", "AllReplicasReady", timeout=WAIT)

    header, row = plane.kubectl("get", "ic", "cols", "-n", ns.name).stdout.splitlines()
    assert header.split() == [
        "NAME", "MODEL", "REPLICAS", "READY", "CANARY", "ENDPOINT", "STATUS", "AGE"
    ]  # fmt: skip
    # CANARY is empty without a canary (docs/canary.md); split() skips it.
    # MODEL: the source and the precision asked for (spec.runtime; auto: the server picks).
    assert row.split()[:7] == [
        "cols",
        "resnet50",
        "(auto)",
        "2",
        "2/2",
        "203.0.113.9:80",
        "AllReplicasReady",
    ]
    # The short name `ic`, the singular and the full name all name the same thing.
    for name in ("imageclassifier", "imageclassifiers.kubeclassify.io"):
        same = plane.kubectl("get", name, "cols", "-n", ns.name).stdout.splitlines()[1]
        assert same.split()[:7] == row.split()[:7]


def test_kubectl_scale_goes_through_the_scale_subresource_to_the_pods(
    plane_ns: Namespace, plane: ControlPlane
) -> None:
    ns = plane_ns
    ns.create_classifier("scaly", {"replicas": 1})
    ns.wait_for("deployments", "scaly", timeout=WAIT)
    ns.cluster.wait(lambda: len(ns.pods("scaly")) == 1, WAIT, "the first pod")

    done = plane.kubectl("scale", "ic/scaly", "--replicas=3", "-n", ns.name)
    assert "scaled" in done.stdout
    assert (ns.get("imageclassifiers", "scaly") or {})["spec"]["replicas"] == 3
    # The operator passes it on; the real Deployment and ReplicaSet controllers make the pods.
    ns.wait_for("deployments", "scaly", lambda d: d["spec"]["replicas"] == 3, "3 replicas", WAIT)
    (replicaset,) = ns.items_of("replicasets")
    assert replicaset["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
    ns.cluster.wait(lambda: len(ns.pods("scaly")) == 3, WAIT, "3 pods")
    # The scale subresource reads the status the operator writes (what an HPA would read).
    scale_path = ns.path("imageclassifiers", "scaly", "scale")

    def scale_status() -> dict[str, Any] | None:
        scale: dict[str, Any] = ns.cluster.get(scale_path) or {}
        return scale if scale.get("status", {}).get("replicas") == 3 else None

    scale = ns.cluster.wait(scale_status, WAIT, "status.replicas=3 in the scale subresource")
    assert scale["spec"]["replicas"] == 3
    assert scale["status"]["selector"] == (
        "app.kubernetes.io/instance=scaly,app.kubernetes.io/name=kubeclassify"
    )

    plane.kubectl("scale", "ic/scaly", "--replicas=0", "-n", ns.name)
    ns.cluster.wait(lambda: not ns.pods("scaly"), WAIT, "every pod gone at replicas 0")
    ns.wait_condition("scaly", "Ready", "False", "ScaledToZero", timeout=WAIT)


def test_unknown_fields_are_pruned_with_a_warning(plane_ns: Namespace, plane: ControlPlane) -> None:
    """Without strict validation the API server drops what the schema does not know (and
    kubectl warns): the stored classifier and its children carry only known fields."""
    ns = plane_ns
    manifest = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": "pruned", "namespace": ns.name},
        "spec": {"replicas": 1, "colour": "blue", "server": {"topK": 3, "turbo": True}},
        "status": {"ready": "9/9"},
    }
    done = plane.kubectl("apply", "--validate=warn", "-f", "-", stdin=json.dumps(manifest))
    assert 'unknown field "spec.colour"' in done.stderr
    assert 'unknown field "spec.server.turbo"' in done.stderr
    stored = ns.get("imageclassifiers", "pruned") or {}
    assert "colour" not in stored["spec"]
    assert "turbo" not in stored["spec"]["server"]
    assert stored["spec"]["server"]["topK"] == 3
    # The status is the status subresource's: a write to the main resource does not set it.
    assert stored.get("status", {}).get("ready") != "9/9"
    deployment = ns.wait_for("deployments", "pruned", timeout=WAIT)
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "TOP_K", "value": "3"} in env

    strict = plane.kubectl(
        "apply", "--validate=strict", "-f", "-", stdin=json.dumps(manifest), check=False
    )
    assert strict.returncode != 0 and 'unknown field "spec.colour"' in strict.stderr


def test_an_hpa_can_target_the_classifier_through_its_scale_subresource(
    plane_ns: Namespace,
) -> None:
    """A user's own HPA on the ImageClassifier (not the Deployment): the real HPA controller
    reads the scale subresource (replicas and the selector from the status) and, below its
    minimum, scales the classifier, which the operator passes on to the Deployment."""
    ns = plane_ns
    ns.create_classifier("target", {"replicas": 1})
    ns.wait_for(
        "imageclassifiers", "target", lambda ic: "selector" in ic.get("status", {}), timeout=WAIT
    )
    hpa = {
        "metadata": {"name": "on-the-classifier"},
        "spec": {
            "scaleTargetRef": {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": "target"},
            "minReplicas": 3,
            "maxReplicas": 5,
        },
    }
    ns.cluster.create(ns.path("horizontalpodautoscalers"), hpa)
    ns.wait_for(
        "imageclassifiers", "target", lambda ic: ic["spec"]["replicas"] == 3, "HPA scaled", WAIT
    )
    ns.wait_for("deployments", "target", lambda d: d["spec"]["replicas"] == 3, "3 replicas", WAIT)
    # The HPA reads back what the operator reports through the scale subresource.
    ns.wait_for(
        "horizontalpodautoscalers",
        "on-the-classifier",
        lambda h: (
            h.get("status", {}).get("currentReplicas") == 3
            and any(
                c["type"] == "AbleToScale" and c["status"] == "True"
                for c in h["status"].get("conditions", [])
            )
        ),
        "the HPA seeing 3 replicas and able to scale",
        WAIT,
    )
