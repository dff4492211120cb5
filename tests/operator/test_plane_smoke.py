"""The real control plane works end to end: the operator, as its ServiceAccount, makes the
children; the real controllers and scheduler act on them; a played kubelet runs the pod."""

from kubelet import Kubelet
from operators import Namespace


def test_operator_makes_children_and_the_status_follows_the_played_kubelet(
    plane_ns: Namespace, kubelet: Kubelet
) -> None:
    ns = plane_ns
    ns.create_classifier("smoke", {"replicas": 1})
    deployment = ns.wait_for("deployments", "smoke", timeout=30)
    assert deployment["metadata"]["ownerReferences"][0]["kind"] == "ImageClassifier"
    # The real Deployment controller made a ReplicaSet and a pod; no node: Unschedulable.
    (pod,) = kubelet.wait_pods(ns, "smoke", 1, scheduled=False)
    ns.wait_condition("smoke", "Ready", "False", "Unschedulable", timeout=30)
    kubelet.add_node()
    (pod,) = kubelet.wait_pods(ns, "smoke", 1)
    kubelet.run(ns, pod["metadata"]["name"])
    kubelet.assign_ingress(ns, "smoke")
    ns.wait_condition("smoke", "Ready", "True", "AllReplicasReady", timeout=30)
    ns.wait_condition("smoke", "ServiceReady", "True", "EndpointAssigned", timeout=30)
