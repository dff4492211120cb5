"""One pass of `reconcile()` against an in-memory API (tests/support/fake_kube.py).

The middle tier: what a pass creates, patches, deletes or leaves alone, and the status it
writes, in milliseconds and without a process or a server. Each test runs passes the way the
operator does, on a fresh read of the classifier, and plays the controllers' part in between.
What only a real API server shows (its schema, RBAC, watches, garbage collection) stays with the
plane's tests.
"""

import json
from typing import Any

import pytest
from fake_kube import FakeKube, Write
from kubeclassify_operator.kube import CLASSIFIERS, DEPLOYMENTS, HPAS, PODS, SERVICES, Kind
from kubeclassify_operator.reconcile import reconcile
from kubernetes.client.exceptions import ApiException

NAME = "cats"
NAMESPACE = "default"
Event = tuple[str, str, str]  # (type, reason, message), as the pass posts them
STATUS_WRITE = Write("patch", CLASSIFIERS.plural, NAME, "status")


@pytest.fixture
def kube() -> FakeKube:
    return FakeKube()


@pytest.fixture
def events() -> list[Event]:
    return []


def run_pass(kube: FakeKube, events: list[Event]) -> dict[str, Any]:
    """One pass, as the operator runs it: on the classifier as it is now; the writes it makes
    replace `kube.writes`."""
    body = kube.get(CLASSIFIERS, NAMESPACE, NAME)
    assert body is not None
    kube.writes.clear()
    return reconcile(kube, body, lambda *event: events.append(event))


def child(kube: FakeKube, kind: Kind) -> dict[str, Any]:
    found = kube.get(kind, NAMESPACE, NAME)
    assert found is not None, f"no {kind.plural}/{NAME}"
    return found


def ready(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == "Ready")


def owned_by(obj: dict[str, Any], owner: dict[str, Any]) -> bool:
    refs = obj["metadata"].get("ownerReferences") or []
    return any(ref.get("controller") and ref["uid"] == owner["metadata"]["uid"] for ref in refs)


def deployment_controller(kube: FakeKube, ready_replicas: int) -> None:
    """What the Deployment controller reports once the pods of the current spec run."""
    deployment = child(kube, DEPLOYMENTS)
    replicas = deployment["spec"]["replicas"]
    available = "True" if ready_replicas >= replicas else "False"
    status = {
        "observedGeneration": deployment["metadata"]["generation"],
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": ready_replicas,
        "availableReplicas": ready_replicas,
        "conditions": [{"type": "Available", "status": available, "reason": "Replicas"}],
    }
    kube.update(DEPLOYMENTS, NAMESPACE, NAME, {"status": status})


def pod_of_deployment(kube: FakeKube, name: str, state: dict[str, Any], restarts: int) -> None:
    """A pod as the ReplicaSet makes it from the template, with the kubelet's status."""
    template = child(kube, DEPLOYMENTS)["spec"]["template"]
    statuses = [
        {"name": c["name"], "ready": False, "restartCount": restarts, "state": state}
        for c in template["spec"]["containers"]
    ]
    kube.put(
        PODS,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": NAMESPACE, **template["metadata"]},
            "spec": template["spec"],
            "status": {"phase": "Running", "containerStatuses": statuses},
        },
    )


def test_a_new_classifier_gets_its_children_and_a_status(
    kube: FakeKube, events: list[Event]
) -> None:
    classifier = kube.classifier(NAME, {"replicas": 2})
    status = run_pass(kube, events)

    assert set(kube.writes) == {
        Write("create", DEPLOYMENTS.plural, NAME),
        Write("create", SERVICES.plural, NAME),
        STATUS_WRITE,
    }
    assert kube.writes[-1] == STATUS_WRITE  # the status says what the children now are
    deployment, service = child(kube, DEPLOYMENTS), child(kube, SERVICES)
    assert owned_by(deployment, classifier) and owned_by(service, classifier)
    assert deployment["spec"]["replicas"] == 2
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["selector"] == selector
    assert kube.get(HPAS, NAMESPACE, NAME) is None

    assert child(kube, CLASSIFIERS)["status"] == status
    assert status["observedGeneration"] == 1 and status["ready"] == "0/2"
    assert ready(status)["status"] == "False"
    reasons = [reason for _, reason, _ in events]
    assert reasons[:2] == ["Created", "Created"] and len(reasons) == 3  # and the readiness


def test_a_pass_with_nothing_new_writes_nothing(kube: FakeKube, events: list[Event]) -> None:
    kube.classifier(NAME, {"replicas": 2, "autoscaling": {"minReplicas": 2, "maxReplicas": 4}})
    first = run_pass(kube, events)
    told = len(events)
    again = run_pass(kube, events)
    assert kube.writes == [] and events[told:] == []
    assert again == first


def test_hand_edits_to_the_children_are_undone_and_nothing_else_is_written(
    kube: FakeKube, events: list[Event]
) -> None:
    kube.classifier(NAME, {})
    run_pass(kube, events)
    image = child(kube, DEPLOYMENTS)["spec"]["template"]["spec"]["containers"][0]["image"]
    hijacked = {"containers": [{"name": "modelserver", "image": "example.com/other:1"}]}
    kube.update(DEPLOYMENTS, NAMESPACE, NAME, {"spec": {"template": {"spec": hijacked}}})
    kube.update(SERVICES, NAMESPACE, NAME, {"metadata": {"labels": None}})
    run_pass(kube, events)

    assert set(kube.writes) == {
        Write("patch", DEPLOYMENTS.plural, NAME),
        Write("patch", SERVICES.plural, NAME),
    }
    assert child(kube, DEPLOYMENTS)["spec"]["template"]["spec"]["containers"][0]["image"] == image
    assert child(kube, SERVICES)["metadata"]["labels"]
    assert [reason for _, reason, _ in events[-2:]] == ["Updated", "Updated"]


def test_a_spec_change_patches_only_the_child_it_changes(
    kube: FakeKube, events: list[Event]
) -> None:
    kube.classifier(NAME, {"replicas": 1})
    run_pass(kube, events)
    service = child(kube, SERVICES)
    kube.update(CLASSIFIERS, NAMESPACE, NAME, {"spec": {"replicas": 3}})
    status = run_pass(kube, events)

    assert set(kube.writes) == {Write("patch", DEPLOYMENTS.plural, NAME), STATUS_WRITE}
    assert child(kube, DEPLOYMENTS)["spec"]["replicas"] == 3
    assert child(kube, SERVICES) == service  # not even a new resourceVersion
    assert status["observedGeneration"] == 2 and status["ready"] == "0/3"


def test_the_status_follows_the_children_to_ready(kube: FakeKube, events: list[Event]) -> None:
    """The Deployment controller's count and the load balancer's address make it Ready."""
    kube.classifier(NAME, {"replicas": 2})
    run_pass(kube, events)
    deployment_controller(kube, ready_replicas=2)
    status = run_pass(kube, events)
    assert ready(status)["reason"] == "LoadBalancerPending"
    assert "url" not in status

    lb = {"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}}
    kube.update(SERVICES, NAMESPACE, NAME, lb)
    status = run_pass(kube, events)
    assert kube.writes == [STATUS_WRITE]
    assert ready(status)["status"] == "True" and status["ready"] == "2/2"
    assert status["url"] == "http://203.0.113.7:80/predict"
    assert events[-1][:2] == ("Normal", "Ready")


def test_a_crash_looping_pod_is_the_reason_and_a_warning(
    kube: FakeKube, events: list[Event]
) -> None:
    kube.classifier(NAME, {"replicas": 1})
    run_pass(kube, events)
    deployment_controller(kube, ready_replicas=0)
    waiting = {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}}
    pod_of_deployment(kube, f"{NAME}-abc12", waiting, restarts=3)
    status = run_pass(kube, events)
    assert ready(status)["reason"] == "CrashLoopBackOff"
    assert events[-1][:2] == ("Warning", "CrashLoopBackOff")
    assert kube.writes == [STATUS_WRITE]  # the children are as they should be


def test_a_same_name_stranger_is_never_written(kube: FakeKube, events: list[Event]) -> None:
    stranger = kube.put(
        DEPLOYMENTS,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": NAME, "namespace": NAMESPACE},
            "spec": {"replicas": 7},
        },
    )
    kube.classifier(NAME, {"autoscaling": {"minReplicas": 1, "maxReplicas": 3}})
    status = run_pass(kube, events)

    assert set(kube.writes) == {Write("create", SERVICES.plural, NAME), STATUS_WRITE}
    assert child(kube, DEPLOYMENTS) == stranger
    assert kube.get(HPAS, NAMESPACE, NAME) is None  # never autoscale someone else's Deployment
    assert ready(status)["reason"] == "ChildConflict"
    assert "Deployment cats" in ready(status)["message"]

    kube.delete(DEPLOYMENTS, NAMESPACE, NAME)
    status = run_pass(kube, events)
    assert Write("create", DEPLOYMENTS.plural, NAME) in kube.writes
    assert Write("create", HPAS.plural, NAME) in kube.writes
    assert ready(status)["reason"] != "ChildConflict"


def test_autoscaling_owns_the_replica_count_until_it_is_turned_off(
    kube: FakeKube, events: list[Event]
) -> None:
    kube.classifier(NAME, {"replicas": 1, "autoscaling": {"minReplicas": 2, "maxReplicas": 5}})
    classifier = child(kube, CLASSIFIERS)
    run_pass(kube, events)
    hpa = child(kube, HPAS)
    assert owned_by(hpa, classifier)
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
    assert hpa["spec"]["scaleTargetRef"]["name"] == NAME
    assert child(kube, DEPLOYMENTS)["spec"]["replicas"] == 2  # minReplicas to start with

    kube.update(DEPLOYMENTS, NAMESPACE, NAME, {"spec": {"replicas": 4}})  # the HPA scales
    run_pass(kube, events)
    assert child(kube, DEPLOYMENTS)["spec"]["replicas"] == 4  # not fought

    kube.update(CLASSIFIERS, NAMESPACE, NAME, {"spec": {"autoscaling": None}})
    run_pass(kube, events)
    assert Write("delete", HPAS.plural, NAME) in kube.writes
    assert kube.get(HPAS, NAMESPACE, NAME) is None
    assert child(kube, DEPLOYMENTS)["spec"]["replicas"] == 1  # spec.replicas again


def test_an_invalid_spec_makes_no_child_and_says_why(kube: FakeKube, events: list[Event]) -> None:
    kube.classifier(NAME, {"replicas": -1})
    status = run_pass(kube, events)
    assert kube.writes == [STATUS_WRITE]
    assert ready(status)["reason"] == "InvalidSpec" and "replicas" in ready(status)["message"]
    assert events[-1][:2] == ("Warning", "InvalidSpec")


def test_a_child_the_api_server_refuses_is_an_invalid_spec(
    kube: FakeKube, events: list[Event]
) -> None:
    cause = {
        "field": "spec.template.spec.nodeSelector",
        "message": 'Invalid value: "bad key!": name part must consist of alphanumeric characters',
    }
    body = {"kind": "Status", "code": 422, "details": {"causes": [cause]}}
    kube.refuse("create", DEPLOYMENTS, ApiException(status=422, body=json.dumps(body)))
    kube.classifier(NAME, {})
    status = run_pass(kube, events)
    assert kube.writes == [STATUS_WRITE]
    assert ready(status)["reason"] == "InvalidSpec"
    assert "spec.nodeSelector" in ready(status)["message"]


def test_a_pass_cut_short_by_the_api_server_is_completed_by_the_next(
    kube: FakeKube, events: list[Event]
) -> None:
    """The caller retries a pass that failed on a transient error; the retry redoes nothing
    the first one did."""
    kube.classifier(NAME, {})
    kube.refuse("create", SERVICES, ApiException(status=503, reason="Service Unavailable"))
    with pytest.raises(ApiException):
        run_pass(kube, events)
    assert kube.writes == [Write("create", DEPLOYMENTS.plural, NAME)]  # and no status

    status = run_pass(kube, events)
    assert kube.writes == [Write("create", SERVICES.plural, NAME), STATUS_WRITE]
    assert status["observedGeneration"] == 1
