"""The canary's Gateway mode in whole passes of `reconcile()` against the in-memory API
(issue 20): the track Services and the HTTPRoute made, weighted as the canary fares, deleted
when spec.canary.gateway goes, and a clear refusal on a cluster without the Gateway API.

The Deployment controller and the kubelet are played here as in test_canary.py.
"""

from typing import Any

from fake_kube import FakeKube, Write
from kubeclassify_operator.kube import CLASSIFIERS, DEPLOYMENTS, HTTPROUTES, PODS, SERVICES, Kind
from kubeclassify_operator.reconcile import reconcile
from kubeclassify_operator.routes import route_share

NAME = "cats"
NAMESPACE = "default"
CANARY_NAME = f"{NAME}-canary"
TRACK_SERVICES = (f"{NAME}-stable", f"{NAME}-canary")
GATEWAY = {"name": "edge", "namespace": "infra"}
Event = tuple[str, str, str]
LOAD_FAILED = {
    "terminated": {
        "exitCode": 1,
        "reason": "Error",
        "message": "cannot serve: MODEL_FILE=/mnt/pvc/models/broken.tflite cannot be loaded",
    }
}


class CountingKube(FakeKube):
    """A FakeKube that also counts the reads of each kind (the pass's cost)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: dict[str, int] = {}

    def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads[kind.plural] = self.reads.get(kind.plural, 0) + 1
        return super().get(kind, namespace, name)


def run_pass(kube: FakeKube, events: list[Event]) -> dict[str, Any]:
    body = kube.get(CLASSIFIERS, NAMESPACE, NAME)
    assert body is not None
    kube.writes.clear()
    return reconcile(kube, body, lambda *event: events.append(event))


def _pod(of: dict[str, Any], index: int, ready: bool, state: dict[str, Any] | None) -> Any:
    template = of["spec"]["template"]
    container = {
        "name": "modelserver",
        "ready": ready,
        "restartCount": 0,
        "state": state or {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
    }
    return {
        "metadata": {"name": f"{of['metadata']['name']}-{index}", **template["metadata"]},
        "spec": template["spec"],
        "status": {
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [container],
        },
    }


def controllers(kube: FakeKube, ready: dict[str, int], state: dict[str, Any] | None = None) -> None:
    """Each Deployment's pods of its current template, `ready[name]` of them ready (the rest
    in `state`), and its status."""
    for key in [key for key in kube.objects if key[0] == PODS.plural]:
        del kube.objects[key]
    for name, count in ready.items():
        found = kube.get(DEPLOYMENTS, NAMESPACE, name)
        if found is None:
            continue
        replicas = found["spec"]["replicas"]
        for index in range(replicas):
            ok = index < count
            kube.put(PODS, _pod(found, index, ok, None if ok else state))
        status = {
            "observedGeneration": found["metadata"]["generation"],
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": min(count, replicas),
        }
        kube.update(DEPLOYMENTS, NAMESPACE, name, {"status": status})


def route(kube: FakeKube) -> dict[str, Any] | None:
    return kube.get(HTTPROUTES, NAMESPACE, NAME)


def backends(kube: FakeKube) -> list[tuple[str, int]]:
    found = route(kube)
    assert found is not None
    return [(b["name"], b["weight"]) for b in found["spec"]["rules"][0]["backendRefs"]]


def gateway_classifier(kube: FakeKube, percent: int = 20, **canary: Any) -> None:
    spec = {"replicas": 5, "canary": {"trafficPercent": percent, "gateway": GATEWAY, **canary}}
    kube.classifier(NAME, spec)


def test_a_service_per_track_and_a_route_with_no_weight_on_an_unready_canary() -> None:
    kube, events = FakeKube(), list[Event]()
    gateway_classifier(kube)
    run_pass(kube, events)
    uid = kube.objects[CLASSIFIERS.plural, NAMESPACE, NAME]["metadata"]["uid"]
    for name in TRACK_SERVICES:
        service = kube.get(SERVICES, NAMESPACE, name)
        assert service is not None and service["spec"]["type"] == "ClusterIP"
        assert service["metadata"]["ownerReferences"][0]["uid"] == uid
    made = route(kube)
    assert made is not None and made["metadata"]["ownerReferences"][0]["uid"] == uid
    assert made["spec"]["parentRefs"][0]["name"] == "edge"
    assert backends(kube) == [("cats-stable", 100), ("cats-canary", 0)]  # not ready: no share

    controllers(kube, {NAME: 5, CANARY_NAME: 0})
    run_pass(kube, events)
    assert backends(kube) == [("cats-stable", 100), ("cats-canary", 0)]


def test_a_ready_canary_gets_its_weight_and_the_status_shows_the_share_in_force() -> None:
    kube, events = FakeKube(), list[Event]()
    gateway_classifier(kube)
    run_pass(kube, events)
    controllers(kube, {NAME: 5, CANARY_NAME: 1})
    run_pass(kube, events)
    assert backends(kube) == [("cats-stable", 80), ("cats-canary", 20)]
    controllers(kube, {NAME: 4, CANARY_NAME: 1})
    status = run_pass(kube, events)
    assert route_share(route(kube)) == 20
    assert status["canary"]["trafficPercent"] == 20
    assert run_pass(kube, events) == status and kube.writes == []  # settled


def test_a_hand_edited_weight_is_restored() -> None:
    kube, events = FakeKube(), list[Event]()
    gateway_classifier(kube)
    run_pass(kube, events)
    found = route(kube)
    assert found is not None
    found["spec"]["rules"][0]["backendRefs"][1]["weight"] = 100
    kube.update(HTTPROUTES, NAMESPACE, NAME, {"spec": found["spec"]})
    run_pass(kube, events)
    assert Write("patch", HTTPROUTES.plural, NAME) in kube.writes
    assert backends(kube) == [("cats-stable", 100), ("cats-canary", 0)]


def test_a_canary_rolled_back_is_no_backend_of_the_route() -> None:
    kube, events = FakeKube(), list[Event]()
    gateway_classifier(kube, modelSource={"storageUri": "pvc://models/broken.tflite"})
    run_pass(kube, events)
    controllers(kube, {NAME: 5, CANARY_NAME: 0}, state=LOAD_FAILED)
    status = run_pass(kube, events)
    assert status["canary"]["state"] == "RolledBack"
    assert backends(kube) == [("cats-stable", 100)]


def test_at_zero_percent_the_route_has_the_stable_backend_alone() -> None:
    kube, events = FakeKube(), list[Event]()
    gateway_classifier(kube, percent=0)
    run_pass(kube, events)
    assert backends(kube) == [("cats-stable", 100)]


def test_removing_the_gateway_deletes_the_route_and_the_track_services() -> None:
    kube, events = FakeKube(), list[Event]()
    gateway_classifier(kube)
    run_pass(kube, events)
    kube.update(CLASSIFIERS, NAMESPACE, NAME, {"spec": {"canary": {"gateway": None}}})
    run_pass(kube, events)
    assert route(kube) is None
    assert all(kube.get(SERVICES, NAMESPACE, name) is None for name in TRACK_SERVICES)
    assert kube.get(SERVICES, NAMESPACE, NAME) is not None  # the classifier's own Service stays
    deleted = {(w.plural, w.name) for w in kube.writes if w.verb == "delete"}
    assert deleted == {("httproutes", NAME), *(("services", name) for name in TRACK_SERVICES)}
    notes = [message for _, reason, message in events if reason == "Deleted"]
    assert f"Deleted HTTPRoute {NAME} (no spec.canary.gateway)" in notes


def test_without_the_gateway_api_the_status_says_so_and_the_classifier_serves_on() -> None:
    kube, events = FakeKube(), list[Event]()
    kube.missing = {HTTPROUTES.plural}
    gateway_classifier(kube)
    status = run_pass(kube, events)  # no exception: a clear status instead
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "InvalidSpec"
    assert "spec.canary.gateway: the Gateway API is not installed" in ready["message"]
    assert ("Warning", "InvalidSpec", ready["message"]) in events
    assert kube.get(DEPLOYMENTS, NAMESPACE, NAME) is not None  # the stable track is made
    assert not [w for w in kube.writes if w.plural == HTTPROUTES.plural]
    assert all(kube.get(SERVICES, NAMESPACE, name) is None for name in TRACK_SERVICES)


def test_a_classifier_without_a_canary_never_reads_an_httproute() -> None:
    """Gateway mode costs nothing to the classifiers that do not use it."""
    kube, events = CountingKube(), list[Event]()
    kube.classifier(NAME, {"replicas": 2})
    run_pass(kube, events)
    controllers(kube, {NAME: 2})
    run_pass(kube, events)
    assert kube.reads.get(HTTPROUTES.plural, 0) == 0
