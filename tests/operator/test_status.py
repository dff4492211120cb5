"""The pure status functions: readiness, failure reasons, endpoints and condition bookkeeping."""

from typing import Any

import pytest
from kubeclassify_operator import builders
from kubeclassify_operator.builders import Owner
from kubeclassify_operator.children import (
    DEPLOYMENT,
    HPA,
    SERVICE,
    Object,
    Verdict,
    controlled_by,
    endpoint_of,
)
from kubeclassify_operator.names import TEMPLATE_HASH
from kubeclassify_operator.spec import ImageClassifierSpec
from kubeclassify_operator.status import (
    Observed,
    compute_status,
    in_conflict,
    invalid_status,
    merge_conditions,
    pod_problem,
    ready_condition,
    ready_verdict,
    replicas_news,
)

T0 = "2026-01-01T00:00:00Z"
T1 = "2026-01-01T00:05:00Z"
UID = "uid-of-cats"


def found(
    deployment: Object,
    service: Object,
    pods: list[dict[str, Any]] | None = None,
    *,
    hpa: Object = None,
) -> Observed:
    """What a pass found: the children by kind, and the pods."""
    children = {DEPLOYMENT.kind: deployment, SERVICE.kind: service, HPA.kind: hpa}
    return Observed(children, pods or [])


def owned_by(uid: str | None, controller: bool = True) -> list[dict[str, Any]]:
    """ownerReferences naming the object with `uid` (none for None)."""
    if uid is None:
        return []
    return [{"kind": "ImageClassifier", "name": "cats", "uid": uid, "controller": controller}]


def deployment(
    replicas: int = 2,
    ready: int = 0,
    available: str | None = None,
    owner: str | None = UID,
    *,
    generation: int = 1,
    rollout: dict[str, Any] | None = None,
    template_hash: str | None = None,
) -> dict[str, Any]:
    """A Deployment as the API returns it; `rollout` adds what the Deployment controller reports."""
    status: dict[str, Any] = {"readyReplicas": ready, **(rollout or {})}
    if available is not None:
        status.setdefault("conditions", []).append(
            {"type": "Available", "status": available, "reason": "MinimumReplicasAvailable"}
        )
    annotations = {TEMPLATE_HASH: template_hash} if template_hash else {}
    return {
        "kind": "Deployment",
        "metadata": {"name": "cats", "generation": generation, "ownerReferences": owned_by(owner)},
        "spec": {"replicas": replicas, "template": {"metadata": {"annotations": annotations}}},
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
        "spec": {
            "type": type_,
            "ports": [{"name": "http", "port": 80}, {"name": "grpc", "port": 8081}],
        },
        "status": {"loadBalancer": {"ingress": ingress or []}},
    }


def pod(
    waiting: str | None = None,
    last_terminated: str | None = None,
    unschedulable: bool = False,
    container: str = "modelserver",
    *,
    state: dict[str, Any] | None = None,
    ready: bool = False,
    restarts: int | None = None,
    template_hash: str | None = None,
    terminating: bool = False,
) -> dict[str, Any]:
    """A pod of `cats` as the kubelet reports it."""
    cstat: dict[str, Any] = {"name": container, "state": state or {}, "ready": ready}
    if waiting:
        cstat["state"] = {"waiting": {"reason": waiting, "message": f"details of {waiting}"}}
    if last_terminated:
        cstat["lastState"] = {"terminated": {"reason": last_terminated, "finishedAt": T0}}
    if restarts is not None:
        cstat["restartCount"] = restarts
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
    meta: dict[str, Any] = {"name": "cats-1"}
    if template_hash:
        meta["annotations"] = {TEMPLATE_HASH: template_hash}
    if terminating:
        meta["deletionTimestamp"] = T1
    return {"metadata": meta, "status": status}


RUNNING = {"running": {"startedAt": T1}}
LB_WITH_ADDRESS = {"ingress": [{"ip": "203.0.113.7"}]}


@pytest.mark.parametrize(
    ("pods", "reason", "in_message"),
    [
        ([pod(waiting="CrashLoopBackOff")], "CrashLoopBackOff", "details of CrashLoopBackOff"),
        ([pod(waiting="ImagePullBackOff")], "ImagePullBackOff", "cats-1"),
        ([pod(waiting="ErrImagePull")], "ImagePullBackOff", "details of ErrImagePull"),
        (
            [pod(waiting="CrashLoopBackOff", last_terminated="OOMKilled")],
            "OOMKilled",
            "raise spec.resources.limits.memory",
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
    assert ready_verdict(found(deployment(1, 1, "True"), service(), pods)).reason == reason


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
        (found(None, None), "False", "DeploymentMissing"),
        (found(deployment(2, 0), service()), "False", "ReplicasNotReady"),
        (found(deployment(2, 1), service()), "False", "ReplicasNotReady"),
        (found(deployment(0, 0), service()), "False", "ScaledToZero"),
        (found(deployment(2, 2), None), "False", "ServiceMissing"),
        (found(deployment(2, 2), service()), "False", "LoadBalancerPending"),
        (
            found(deployment(2, 2), service(ingress=[{"ip": "192.0.2.1"}])),
            "True",
            "AllReplicasReady",
        ),
        (found(deployment(2, 3), service("ClusterIP")), "True", "AllReplicasReady"),
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
    grpc = endpoint and endpoint.replace(":80", ":8081")
    assert endpoint_of(svc, "grpc") == grpc
    assert endpoint_of(svc, "nope") is None


@pytest.mark.parametrize(
    ("raw", "grpc", "model"),
    [
        ({}, "203.0.113.7:8081", "resnet50 (auto)"),
        ({"server": {"grpc": False}}, None, "resnet50 (auto)"),
        ({"runtime": {"backend": "openvino", "precision": "int8"}}, "203.0.113.7:8081", None),
    ],
)
def test_status_names_the_grpc_endpoint_and_the_precision(
    raw: dict[str, Any], grpc: str | None, model: str | None
) -> None:
    spec = ImageClassifierSpec.model_validate(raw)
    observed = found(deployment(1, 1, "True"), service(ingress=[{"ip": "203.0.113.7"}]))
    status = compute_status(
        name="cats", uid=UID, spec=spec, observed=observed, previous={}, generation=1, now=T0
    )
    assert status.get("grpcEndpoint") == grpc
    assert status["model"]["summary"] == (model or "resnet50 (int8)")
    assert status["model"]["backend"] == spec.runtime.backend


def test_compute_status_reports_everything() -> None:
    spec = ImageClassifierSpec.model_validate({"replicas": 2})
    observed = found(deployment(2, 2, "True"), service(ingress=[{"ip": "203.0.113.7"}]), [pod()])
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
        "grpcEndpoint": "203.0.113.7:8081",
        "model": {
            "name": "resnet50",
            "source": "resnet50",
            "labels": 1000,
            "backend": "auto",
            "precision": "auto",
            "summary": "resnet50 (auto)",
        },
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
        observed=found(deployment(1, 1, "True"), service()),
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
        observed=found(deployment(1, 1, "True"), service("ClusterIP")),
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
            found(deployment(2, 2, "True", owner=None), service("ClusterIP")),
            CONFLICT,
            CONFLICT,
            ("True", "EndpointAssigned"),
        ),
        (
            found(deployment(2, 2, "True"), service("ClusterIP", owner="someone-else")),
            CONFLICT,
            ("True", "MinimumReplicasAvailable"),
            CONFLICT,
        ),
        (
            found(
                deployment(2, 2, "True"),
                service("ClusterIP"),
                hpa={"kind": "X", "metadata": {"name": "cats"}},
            ),
            CONFLICT,
            ("True", "MinimumReplicasAvailable"),
            ("True", "EndpointAssigned"),
        ),
        (
            found(deployment(2, 2, "True"), service("ClusterIP")),
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
    status = status_of(found(deployment(5, 5, "True", owner="someone-else"), None))
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert "Deployment cats" in ready["message"]
    assert "not owned by this ImageClassifier" in ready["message"]
    # The stranger's 5/5 ready replicas are not this classifier's.
    assert (status["replicas"], status["readyReplicas"], status["ready"]) == (2, 0, "0/2")


def ready_of(observed: Observed, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Ready condition of `cats` for these children."""
    status = compute_status(
        name="cats",
        uid=UID,
        spec=ImageClassifierSpec.model_validate(spec or {"replicas": 2}),
        observed=observed,
        previous={},
        generation=1,
        now=T0,
    )
    ready = ready_condition(status)
    assert ready is not None
    return ready


def serving(*pods: dict[str, Any], **deployment_args: Any) -> Observed:
    """2/2 replicas ready behind a load balancer with an address, and these pods."""
    return found(
        deployment(2, 2, "True", **deployment_args),
        service(ingress=LB_WITH_ADDRESS["ingress"]),
        list(pods),
    )


def test_a_past_oom_kill_is_history_once_the_container_is_back() -> None:
    """Running and ready again after an OOM kill: Ready, with the kill in the message."""
    back = pod(last_terminated="OOMKilled", state=RUNNING, ready=True, restarts=3)
    assert pod_problem([back]) is None
    ready = ready_of(serving(back))
    assert (ready["status"], ready["reason"]) == ("True", "AllReplicasReady")
    assert ready["message"] == (
        f"2/2 replicas are ready; 3 restart(s) so far, the last in pod cats-1: OOMKilled at {T0}"
    )


@pytest.mark.parametrize(
    "cstat",
    [
        {"state": {"terminated": {"reason": "OOMKilled"}}},  # killed right now
        {"state": {"waiting": {"reason": "CrashLoopBackOff"}}},  # backing off after the kill
        {"state": RUNNING, "started": False},  # restarted, startup probe not passed yet
        {"state": RUNNING, "ready": False},  # the same where the kubelet reports no `started`
    ],
)
def test_an_oom_kill_counts_until_the_container_is_back(cstat: dict[str, Any]) -> None:
    killed = pod(last_terminated="OOMKilled")
    killed["status"]["containerStatuses"][0].update(cstat)
    verdict = pod_problem([killed])
    assert verdict is not None and verdict.reason == "OOMKilled"
    assert ready_of(serving(killed))["reason"] == "OOMKilled"


def containers_ready(killed: dict[str, Any], status: str, at: str) -> dict[str, Any]:
    killed["status"]["conditions"] = [
        {"type": "ContainersReady", "status": status, "lastTransitionTime": at}
    ]
    return killed


def test_a_container_failing_readiness_after_serving_is_not_blamed_on_an_old_oom_kill() -> None:
    """Ready after its restart (at T1), unready since T2 (overloaded, say): not the OOM kill."""
    flapping = pod(last_terminated="OOMKilled", state=RUNNING)
    flapping["status"]["containerStatuses"][0]["started"] = True
    assert pod_problem([containers_ready(flapping, "False", "2026-01-01T00:06:00Z")]) is None


@pytest.mark.parametrize("unready_since", [T0, T1])  # before it started, or that same second
def test_an_oom_kill_counts_while_the_restarted_server_loads_its_model(unready_since: str) -> None:
    """What a real node shows between kills: the container restarted at T1 and its startup
    probe (/healthz) passed, but the model is still loading, and it has not been ready since:
    the same memory limit is about to kill it again. It once said ReplicasNotReady here."""
    loading = pod(last_terminated="OOMKilled", state=RUNNING, restarts=4)
    loading["status"]["containerStatuses"][0]["started"] = True
    verdict = pod_problem([containers_ready(loading, "False", unready_since)])
    assert verdict is not None and verdict.reason == "OOMKilled"


def test_the_oom_message_names_the_memory_limit_to_raise() -> None:
    killed = pod(waiting="CrashLoopBackOff", last_terminated="OOMKilled")
    killed["spec"] = {
        "containers": [{"name": "modelserver", "resources": {"limits": {"memory": "400Mi"}}}]
    }
    verdict = pod_problem([killed])
    assert verdict is not None
    assert verdict.message == (
        "pod cats-1: the model server ran out of memory at its limit of 400Mi:"
        " raise spec.resources.limits.memory"
    )


def test_ready_needs_the_load_balancer_address() -> None:
    """Ready means "you can call it": a LoadBalancer without an address cannot be called."""
    pending = ready_of(found(deployment(2, 2, "True"), service()))
    assert (pending["status"], pending["reason"]) == ("False", "LoadBalancerPending")
    assert "2/2 replicas are ready" in pending["message"]
    assert ready_of(serving())["status"] == "True"
    cluster_ip = ready_of(found(deployment(2, 2, "True"), service("ClusterIP")))
    assert cluster_ip["status"] == "True"


# What the Deployment controller reports for a 2-replica Deployment, rolling out or not.
DONE = {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}
NEW_POD_STARTING = {**DONE, "replicas": 3, "updatedReplicas": 1}  # maxSurge 1: old pods ready
LAST_OLD_POD_LEAVING = {**DONE, "replicas": 3}
DEADLINE = {
    "type": "Progressing",
    "status": "False",
    "reason": "ProgressDeadlineExceeded",
    "message": 'ReplicaSet "cats-7f9c" has timed out progressing.',
}


OLD_POD = pod(state=RUNNING, ready=True, template_hash="old")
NEW_POD = pod(state=RUNNING, ready=True, template_hash="new")


@pytest.mark.parametrize(
    ("generation", "rollout", "reason", "in_message"),
    [
        (2, DONE, "AllReplicasReady", "2/2 replicas are ready"),
        # The template was just patched: the ready pods are the old spec's.
        (3, DONE, "RollingOut", "has not seen the spec yet"),
        (2, NEW_POD_STARTING, "RollingOut", "1/2 pods run the current spec, 2 of an older one"),
        (2, LAST_OLD_POD_LEAVING, "RollingOut", "2/2 pods run the current spec, 1 of an older"),
        (2, {**NEW_POD_STARTING, "conditions": [DEADLINE]}, "ProgressDeadlineExceeded", "timed"),
        # No controller has reported yet (a new Deployment): not a rollout.
        (1, {}, "AllReplicasReady", "2/2"),
    ],
)
def test_ready_follows_the_rollout_of_the_current_spec(
    generation: int, rollout: dict[str, Any], reason: str, in_message: str
) -> None:
    ready = ready_of(serving(OLD_POD, generation=generation, rollout=rollout, template_hash="new"))
    assert ready["reason"] == reason
    assert ready["status"] == ("True" if reason == "AllReplicasReady" else "False")
    assert in_message in ready["message"]


def test_a_scale_alone_is_no_rollout() -> None:
    """Scaling bumps the Deployment's generation too, but every pod already runs the template."""
    scaled = serving(NEW_POD, generation=3, rollout=DONE, template_hash="new")
    assert ready_of(scaled)["reason"] == "AllReplicasReady"


def test_too_few_ready_replicas_during_a_rollout_are_counted() -> None:
    observed = found(
        deployment(2, 1, generation=2, rollout=NEW_POD_STARTING),
        service(ingress=LB_WITH_ADDRESS["ingress"]),
    )
    assert ready_of(observed)["reason"] == "ReplicasNotReady"


@pytest.mark.parametrize(
    "stale",
    [
        pod("ImagePullBackOff", template_hash="old"),  # of the replaced (bad-image) template
        pod("ImagePullBackOff", template_hash="new", terminating=True),
        pod("ImagePullBackOff"),  # made before pods carried a template hash
    ],
)
def test_terminating_pods_and_pods_of_an_older_template_are_ignored(
    stale: dict[str, Any],
) -> None:
    """After a bad image is reverted, its lingering pods no longer decide the status."""
    healthy = pod(state=RUNNING, ready=True, template_hash="new")
    assert ready_of(serving(stale, healthy, template_hash="new"))["reason"] == "AllReplicasReady"
    # The same failure in a pod of the current template still counts.
    failing = pod("ImagePullBackOff", template_hash="new")
    assert ready_of(serving(failing, healthy, template_hash="new"))["reason"] == "ImagePullBackOff"


OWNER = Owner(name="cats", namespace="ml", uid=UID)


def built(raw: dict[str, Any]) -> dict[str, Any]:
    return builders.build_deployment(OWNER, ImageClassifierSpec.model_validate(raw))


def hash_of(deployment: dict[str, Any]) -> str | None:
    annotations: dict[str, str] = deployment["spec"]["template"]["metadata"]["annotations"]
    return annotations.get(TEMPLATE_HASH)


def test_the_template_hash_names_the_pod_template() -> None:
    assert hash_of(built({})) == hash_of(built({})) is not None
    assert hash_of(built({"replicas": 5})) == hash_of(built({}))  # scaling rolls nothing
    assert hash_of(built({"image": "registry.example/ms:2"})) != hash_of(built({}))
    # A user's annotation cannot pose as the hash.
    assert hash_of(built({"podAnnotations": {TEMPLATE_HASH: "x"}})) == hash_of(built({}))


def test_a_new_template_hash_alone_rolls_no_pods() -> None:
    """A Deployment from an operator that set no hash (or another one) is not patched for it."""
    desired = built({})
    for old_hash in (None, "from-an-older-operator"):
        meta = desired["spec"]["template"]["metadata"]
        older = {k: v for k, v in meta["annotations"].items() if k != TEMPLATE_HASH}
        if old_hash:
            older[TEMPLATE_HASH] = old_hash
        template = {**desired["spec"]["template"], "metadata": {**meta, "annotations": older}}
        current = builders.with_last_applied(
            {**desired, "spec": {**desired["spec"], "template": template}}
        )
        kept = builders.with_last_applied(builders.keep_template_hash(desired, current))
        assert builders.is_subset(kept, current)  # what the operator compares: nothing to patch
        assert hash_of(kept) == old_hash
    # A real change of the template brings the new hash along.
    changed = built({"image": "registry.example/ms:2"})
    assert hash_of(builders.keep_template_hash(changed, current)) == hash_of(changed)
    assert builders.keep_template_hash(desired, None) == desired


AUTOSCALED = {"replicas": 3, "autoscaling": {"minReplicas": 1, "maxReplicas": 4}}


def test_spec_replicas_under_autoscaling_is_said_to_be_ignored() -> None:
    ready = ready_of(serving(), AUTOSCALED)
    assert ready["status"] == "True"
    assert "spec.replicas (3) is ignored while spec.autoscaling is set" in ready["message"]
    assert "ignored" not in ready_of(serving(), {"replicas": 3})["message"]


def status_for(raw: dict[str, Any], previous: dict[str, Any]) -> dict[str, Any]:
    spec = ImageClassifierSpec.model_validate(raw)
    return compute_status(
        name="cats", uid=UID, spec=spec, observed=serving(), previous=previous, generation=2, now=T1
    )


def test_one_event_per_change_of_ignored_replicas() -> None:
    spec = ImageClassifierSpec.model_validate
    scaled = {**AUTOSCALED, "replicas": 5}
    created = status_for(AUTOSCALED, {})
    assert replicas_news(spec(AUTOSCALED), {}) is None  # a new classifier: its status says it
    assert replicas_news(spec(AUTOSCALED), created) is None  # the next pass: nothing new
    news = replicas_news(spec(scaled), created)  # kubectl scale --replicas=5
    assert news is not None and news.startswith("spec.replicas (5) is ignored")
    assert replicas_news(spec(scaled), status_for(scaled, created)) is None  # told once
    manual = status_for({"replicas": 3}, {})
    assert replicas_news(spec({"replicas": 5}), manual) is None  # no autoscaling: it scales
    assert replicas_news(spec(AUTOSCALED), manual) is not None  # autoscaling turned on
