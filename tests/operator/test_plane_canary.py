"""The canary's two Deployments on a real control plane (issue 20): the real Deployment and
ReplicaSet controllers and the garbage collector, the real operator; the test plays the kubelet.

The stable Deployment's selector (immutable) matches the canary's pods too: what this holds is
that its ReplicaSets never count or delete them all the same (each counts the pods it controls),
through the split, the stable track's shrinking, and the canary's removal."""

from collections.abc import Iterator
from typing import Any

import pytest
from control_plane import ControlPlane
from kubeclassify_operator.names import TRACK_LABEL
from kubelet import Kubelet
from operators import Namespace

WAIT = 60  # seconds (the plane shares 2 CPUs)
NAME = "cats"
CANARY = f"{NAME}-canary"


@pytest.fixture(autouse=True)
def pods_finish(plane_ns: Namespace, plane: ControlPlane) -> Iterator[None]:
    """After the test, finish deleting its pods, as a kubelet would."""
    yield
    plane.kubectl(
        "delete", "pods", "--all", "-n", plane_ns.name, "--grace-period=0", "--force", check=False
    )


def live(ns: Namespace, track: str) -> list[dict[str, Any]]:
    return [
        pod
        for pod in ns.pods(NAME)
        if pod["metadata"]["labels"].get(TRACK_LABEL) == track
        and not pod["metadata"].get("deletionTimestamp")
    ]


def run_all(ns: Namespace, kubelet: Kubelet, track: str, count: int) -> list[str]:
    """Wait for `count` live, scheduled pods of the track, and run them ready."""

    def probe() -> list[dict[str, Any]] | None:
        pods = live(ns, track)
        scheduled = all(pod["spec"].get("nodeName") for pod in pods)
        return pods if len(pods) == count and scheduled else None

    pods = kubelet.cluster.wait(probe, WAIT, f"{count} {track} pods")
    for pod in pods:
        kubelet.run(ns, pod["metadata"]["name"])
    return [pod["metadata"]["name"] for pod in pods]


def status_replicas(ns: Namespace, name: str, replicas: int) -> dict[str, Any]:
    """The Deployment once its controller counts `replicas` pods, all ready."""
    return ns.wait_for(
        "deployments",
        name,
        lambda d: (
            d["spec"]["replicas"] == replicas
            and d.get("status", {}).get("replicas") == replicas
            and d.get("status", {}).get("readyReplicas") == replicas
        ),
        f"{name} at {replicas} ready replicas",
        timeout=WAIT,
    )


def test_the_two_tracks_pods_are_each_their_deployments_alone(
    plane_ns: Namespace, kubelet: Kubelet
) -> None:
    ns = plane_ns
    kubelet.add_node(f"node-{ns.name}")
    canary = {"trafficPercent": 20, "server": {"topK": 3}}  # a canary that differs
    ns.create_classifier(NAME, {"replicas": 5, "canary": canary})
    run_all(ns, kubelet, "stable", 5)  # not shrunk while the canary is not ready
    (canary_pod,) = run_all(ns, kubelet, "canary", 1)

    # The canary ready: the stable track shrinks to 4, and its ReplicaSet deletes one of its
    # own pods, never the canary's, which it does not count either.
    status_replicas(ns, NAME, 4)
    status_replicas(ns, CANARY, 1)
    (still,) = live(ns, "canary")
    assert still["metadata"]["name"] == canary_pod
    assert len(live(ns, "stable")) == 4
    ic = ns.wait_for(
        "imageclassifiers",
        NAME,
        lambda ic: ic.get("status", {}).get("canary", {}).get("trafficPercent") == 20,
        "a 20% share in the status",
        timeout=WAIT,
    )
    assert ic["status"]["ready"] == "5/5"
    owners = {rs["metadata"]["name"]: rs for rs in ns.items_of("replicasets")}
    for pod in ns.pods(NAME):
        (ref,) = pod["metadata"]["ownerReferences"]
        deployment = owners[ref["name"]]["metadata"]["ownerReferences"][0]["name"]
        track = pod["metadata"]["labels"][TRACK_LABEL]
        assert deployment == (CANARY if track == "canary" else NAME)

    # Removed: the stable track back to 5 first, then the canary's Deployment is deleted.
    ns.cluster.patch(ns.path("imageclassifiers", NAME), {"spec": {"canary": None}})
    ns.wait_for("deployments", NAME, lambda d: d["spec"]["replicas"] == 5, timeout=WAIT)
    assert ns.get("deployments", CANARY) is not None  # it serves until then
    run_all(ns, kubelet, "stable", 5)
    kubelet.cluster.wait(
        lambda: ns.get("deployments", CANARY) is None, WAIT, "the canary's Deployment deleted"
    )
    reasons = [event["reason"] for event in ns.events(NAME)]
    assert "CanaryStarted" in reasons and "CanaryRemoved" in reasons
