"""The pure status functions: readiness, failure reasons, endpoints and condition bookkeeping."""

from typing import Any

import pytest
from kubeclassify_operator.spec import ImageClassifierSpec
from kubeclassify_operator.status import (
    Observed,
    Verdict,
    compute_status,
    controlled_by,
    endpoint_of,
    in_conflict,
    invalid_status,
    merge_conditions,
    pod_problem,
    ready_verdict,
)

T0 = "2026-01-01T00:00:00Z"
T1 = "2026-01-01T00:05:00Z"
UID = "uid-of-cats"


def owned_by(uid: str | None, controller: bool = True) -> list[dict[str, Any]]:
    """ownerReferences naming the object with `uid` (none for None)."""
    if uid is None:
        return []
    return [{"kind": "ImageClassifier", "name": "cats", "uid": uid, "controller": controller}]


def deployment(
    replicas: int = 2, ready: int = 0, available: str | None = None, owner: str | None = UID
) -> dict[str, Any]:
    status: dict[str, Any] = {"readyReplicas": ready}
    if available is not None:
        status["conditions"] = [
            {"type": "Available", "status": available, "reason": "MinimumReplicasAvailable"}
        ]
    return {
        "kind": "Deployment",
        "metadata": {"name": "cats", "ownerReferences": owned_by(owner)},
        "spec": {"replicas": replicas},
        "status": status,
    }


def service(
    type_: str = "LoadBalancer",
    ingress: list[dict[str, str]] | None = None,
    owner: str | None = UID,
) -> dict[str, Any]:
    return {
        "kind": "Service",
        "metadata": {"name": "cats", "namespace": "ml", "ownerReferences": owned_by(owner)},
        "spec": {"type": type_, "ports": [{"port": 80}]},
        "status": {"loadBalancer": {"ingress": ingress or []}},
    }


def pod(
    waiting: str | None = None,
    last_terminated: str | None = None,
    unschedulable: bool = False,
    container: str = "modelserver",
) -> dict[str, Any]:
    cstat: dict[str, Any] = {"name": container, "state": {}}
    if waiting:
        cstat["state"] = {"waiting": {"reason": waiting, "message": f"details of {waiting}"}}
    if last_terminated:
        cstat["lastState"] = {"terminated": {"reason": last_terminated}}
    status: dict[str, Any] = {"containerStatuses": [cstat]}
    if unschedulable:
        status = {
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                }
            ]
        }
    return {"metadata": {"name": "cats-1"}, "status": status}


@pytest.mark.parametrize(
    ("pods", "reason", "in_message"),
    [
        ([pod(waiting="CrashLoopBackOff")], "CrashLoopBackOff", "details of CrashLoopBackOff"),
        ([pod(waiting="ImagePullBackOff")], "ImagePullBackOff", "cats-1"),
        ([pod(waiting="ErrImagePull")], "ImagePullBackOff", "details of ErrImagePull"),
        (
            [pod(waiting="CrashLoopBackOff", last_terminated="OOMKilled")],
            "OOMKilled",
            "resources.limits.memory",
        ),
        ([pod(unschedulable=True)], "Unschedulable", "Insufficient nvidia.com/gpu"),
        ([pod(), pod(waiting="CrashLoopBackOff")], "CrashLoopBackOff", "cats-1"),
    ],
)
def test_pod_failures_are_named(pods: list[dict[str, Any]], reason: str, in_message: str) -> None:
    verdict = pod_problem(pods)
    assert verdict is not None
    assert (verdict.status, verdict.reason) == ("False", reason)
    assert in_message in verdict.message
    # The same failure decides readiness even when the Deployment claims enough ready pods.
    assert ready_verdict(Observed(deployment(1, 1, "True"), service(), pods)).reason == reason


@pytest.mark.parametrize(
    "pods",
    [
        [],
        [pod()],
        [pod(waiting="ContainerCreating")],
        [pod(waiting="CrashLoopBackOff", container="istio-proxy")],  # not the model server
    ],
)
def test_healthy_or_starting_pods_are_no_problem(pods: list[dict[str, Any]]) -> None:
    assert pod_problem(pods) is None


@pytest.mark.parametrize(
    ("observed", "status", "reason"),
    [
        (Observed(None, None), "False", "DeploymentMissing"),
        (Observed(deployment(2, 0), service()), "False", "ReplicasNotReady"),
        (Observed(deployment(2, 1), service()), "False", "ReplicasNotReady"),
        (Observed(deployment(0, 0), service()), "False", "ScaledToZero"),
        (Observed(deployment(2, 2), None), "False", "ServiceMissing"),
        (Observed(deployment(2, 2), service()), "True", "AllReplicasReady"),
        (Observed(deployment(2, 3), service("ClusterIP")), "True", "AllReplicasReady"),
    ],
)
def test_ready_only_when_every_desired_replica_is(
    observed: Observed, status: str, reason: str
) -> None:
    verdict = ready_verdict(observed)
    assert (verdict.status, verdict.reason) == (status, reason)


@pytest.mark.parametrize(
    ("svc", "endpoint"),
    [
        (None, None),
        (service(), None),
        (service(ingress=[{"ip": "203.0.113.7"}]), "203.0.113.7:80"),
        (service(ingress=[{"hostname": "lb.example.com"}]), "lb.example.com:80"),
        (service("ClusterIP"), "cats.ml.svc.cluster.local:80"),
        (service("NodePort"), "cats.ml.svc.cluster.local:80"),
    ],
)
def test_endpoint(svc: dict[str, Any] | None, endpoint: str | None) -> None:
    assert endpoint_of(svc) == endpoint


def test_compute_status_reports_everything() -> None:
    spec = ImageClassifierSpec.model_validate({"replicas": 2})
    observed = Observed(deployment(2, 2, "True"), service(ingress=[{"ip": "203.0.113.7"}]), [pod()])
    status = compute_status(
        name="cats", uid=UID, spec=spec, observed=observed, previous={}, generation=4, now=T0
    )
    conditions = {c["type"]: c for c in status.pop("conditions")}
    assert status == {
        "observedGeneration": 4,
        "replicas": 2,
        "readyReplicas": 2,
        "ready": "2/2",
        "selector": "app.kubernetes.io/instance=cats,app.kubernetes.io/name=kubeclassify",
        "endpoint": "203.0.113.7:80",
        "url": "http://203.0.113.7:80/predict",
    }
    assert conditions["Ready"] == {
        "type": "Ready",
        "status": "True",
        "reason": "AllReplicasReady",
        "message": "2/2 replicas are ready",
        "lastTransitionTime": T0,
        "observedGeneration": 4,
    }
    assert conditions["DeploymentAvailable"]["status"] == "True"
    assert conditions["ServiceReady"]["reason"] == "EndpointAssigned"


def test_load_balancer_pending_keeps_service_not_ready_and_no_url() -> None:
    spec = ImageClassifierSpec.model_validate({})
    status = compute_status(
        name="cats",
        uid=UID,
        spec=spec,
        observed=Observed(deployment(1, 1, "True"), service()),
        previous={},
        generation=1,
        now=T0,
    )
    assert "endpoint" not in status and "url" not in status
    service_ready = next(c for c in status["conditions"] if c["type"] == "ServiceReady")
    assert (service_ready["status"], service_ready["reason"]) == ("False", "LoadBalancerPending")


def test_transition_time_is_kept_while_the_status_holds() -> None:
    before = merge_conditions(
        [], {"Ready": Verdict("False", "ReplicasNotReady", "0/1")}, generation=1, now=T0
    )
    same_status = merge_conditions(
        before, {"Ready": Verdict("False", "CrashLoopBackOff", "boom")}, generation=2, now=T1
    )
    assert same_status[0]["lastTransitionTime"] == T0
    assert same_status[0]["reason"] == "CrashLoopBackOff"
    assert same_status[0]["observedGeneration"] == 2
    flipped = merge_conditions(
        same_status, {"Ready": Verdict("True", "AllReplicasReady", "1/1")}, generation=2, now=T1
    )
    assert flipped[0]["lastTransitionTime"] == T1


def test_invalid_status_keeps_the_rest() -> None:
    previous = compute_status(
        name="cats",
        uid=UID,
        spec=ImageClassifierSpec.model_validate({}),
        observed=Observed(deployment(1, 1, "True"), service("ClusterIP")),
        previous={},
        generation=1,
        now=T0,
    )
    status = invalid_status(previous=previous, message="spec.x: bad", generation=2, now=T1)
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"], ready["message"]) == (
        "False",
        "InvalidSpec",
        "spec.x: bad",
    )
    assert ready["lastTransitionTime"] == T1
    assert status["observedGeneration"] == 2
    assert status["endpoint"] == previous["endpoint"]
    assert {c["type"] for c in status["conditions"]} == {
        "Ready",
        "DeploymentAvailable",
        "ServiceReady",
    }


@pytest.mark.parametrize(
    ("child", "controlled"),
    [
        ({"metadata": {"ownerReferences": owned_by(UID)}}, True),
        ({"metadata": {"ownerReferences": owned_by(UID, controller=False)}}, False),
        ({"metadata": {"ownerReferences": owned_by("uid-of-an-older-cats")}}, False),
        ({"metadata": {"ownerReferences": []}}, False),
        ({"metadata": {}}, False),
    ],
)
def test_only_a_controller_reference_to_this_uid_makes_a_child(
    child: dict[str, Any], controlled: bool
) -> None:
    assert controlled_by(child, UID) is controlled


def status_of(observed: Observed) -> dict[str, Any]:
    """The status of `cats` (uid UID, 2 replicas) for these children."""
    spec = ImageClassifierSpec.model_validate({"replicas": 2})
    return compute_status(
        name="cats", uid=UID, spec=spec, observed=observed, previous={}, generation=1, now=T0
    )


def conditions_of(observed: Observed) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status_of(observed)["conditions"]}


CONFLICT = ("False", "ChildConflict")


@pytest.mark.parametrize(
    ("observed", "ready", "deployment_available", "service_ready"),
    [
        (
            Observed(deployment(2, 2, "True", owner=None), service("ClusterIP")),
            CONFLICT,
            CONFLICT,
            ("True", "EndpointAssigned"),
        ),
        (
            Observed(deployment(2, 2, "True"), service("ClusterIP", owner="someone-else")),
            CONFLICT,
            ("True", "MinimumReplicasAvailable"),
            CONFLICT,
        ),
        (
            Observed(
                deployment(2, 2, "True"),
                service("ClusterIP"),
                hpa={"kind": "X", "metadata": {"name": "cats"}},
            ),
            CONFLICT,
            ("True", "MinimumReplicasAvailable"),
            ("True", "EndpointAssigned"),
        ),
        (
            Observed(deployment(2, 2, "True"), service("ClusterIP")),
            ("True", "AllReplicasReady"),
            ("True", "MinimumReplicasAvailable"),
            ("True", "EndpointAssigned"),
        ),
    ],
)
def test_a_same_name_stranger_is_a_conflict_not_a_child(
    observed: Observed,
    ready: tuple[str, str],
    deployment_available: tuple[str, str],
    service_ready: tuple[str, str],
) -> None:
    assert conditions_of(observed) == {
        "Ready": ready,
        "DeploymentAvailable": deployment_available,
        "ServiceReady": service_ready,
    }
    # What makes the operator look again later (the stranger's deletion may bring no event).
    assert in_conflict(status_of(observed)) is (ready == CONFLICT)


def test_conflict_message_names_the_stranger_and_ignores_its_replicas() -> None:
    status = status_of(Observed(deployment(5, 5, "True", owner="someone-else"), None))
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert "Deployment cats" in ready["message"]
    assert "not owned by this ImageClassifier" in ready["message"]
    # The stranger's 5/5 ready replicas are not this classifier's.
    assert (status["replicas"], status["readyReplicas"], status["ready"]) == (2, 0, "0/2")
