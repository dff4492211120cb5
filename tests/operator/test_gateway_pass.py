"""Gateway mode in whole passes of `reconcile()` against the in-memory API (issue 20): the
track Services and the HTTPRoute made, weighted as the canary fares, the route kept (the
stable backend alone) when spec.canary goes, all deleted when spec.gateway goes, never a
route to a Service that is not there, and a clear refusal on a cluster without the Gateway
API.

The Deployment controller and the kubelet are played by fake_kube.play_controllers.
"""

from typing import Any

import pytest
from fake_kube import FakeKube, Write, play_controllers
from kubeclassify_operator.kube import CLASSIFIERS, DEPLOYMENTS, HTTPROUTES, SERVICES, Kind
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
        self.names_read: list[tuple[str, str]] = []

    def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads[kind.plural] = self.reads.get(kind.plural, 0) + 1
        self.names_read.append((kind.plural, name))
        return super().get(kind, namespace, name)


class RouteCheckingKube(FakeKube):
    """A FakeKube that checks, after every write, that the HTTPRoute (if there is one) sends
    requests to Services that exist: what a Gateway sees at any moment of a pass."""

    def __init__(self) -> None:
        super().__init__()
        self.dangling: list[tuple[Write, str]] = []  # (the write, the missing Service)

    def _check(self) -> None:
        found = self.objects.get((HTTPROUTES.plural, NAMESPACE, NAME))
        if found is None:
            return
        for rule in found["spec"]["rules"]:
            for backend in rule["backendRefs"]:
                if (SERVICES.plural, NAMESPACE, backend["name"]) not in self.objects:
                    self.dangling.append((self.writes[-1], backend["name"]))

    def create(self, kind: Kind, namespace: str, body: dict[str, Any]) -> dict[str, Any] | None:
        made = super().create(kind, namespace, body)
        self._check()
        return made

    def patch(
        self, kind: Kind, namespace: str, name: str, patch: dict[str, Any], sub: str | None = None
    ) -> dict[str, Any] | None:
        patched = super().patch(kind, namespace, name, patch, sub)
        self._check()
        return patched

    def delete(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        deleted = super().delete(kind, namespace, name)
        self._check()
        return deleted


def run_pass(kube: FakeKube, events: list[Event]) -> dict[str, Any]:
    body = kube.get(CLASSIFIERS, NAMESPACE, NAME)
    assert body is not None
    kube.writes.clear()
    return reconcile(kube, body, lambda *event: events.append(event))


def controllers(kube: FakeKube, ready: dict[str, int], state: dict[str, Any] | None = None) -> None:
    play_controllers(kube, NAMESPACE, ready, state)


def route(kube: FakeKube) -> dict[str, Any] | None:
    return kube.get(HTTPROUTES, NAMESPACE, NAME)


def backends(kube: FakeKube) -> list[tuple[str, int]]:
    found = route(kube)
    assert found is not None
    return [(b["name"], b["weight"]) for b in found["spec"]["rules"][0]["backendRefs"]]


def gateway_classifier(kube: FakeKube, percent: int = 20, **canary: Any) -> None:
    spec = {"replicas": 5, "gateway": GATEWAY, "canary": {"trafficPercent": percent, **canary}}
    kube.classifier(NAME, spec)


def test_without_a_canary_the_route_sends_every_request_to_the_stable_service() -> None:
    kube, events = RouteCheckingKube(), list[Event]()
    kube.classifier(NAME, {"replicas": 2, "gateway": GATEWAY})
    status = run_pass(kube, events)
    assert backends(kube) == [("cats-stable", 100)]
    assert kube.get(SERVICES, NAMESPACE, "cats-stable") is not None
    assert kube.get(SERVICES, NAMESPACE, "cats-canary") is None
    assert status["gateway"] == "infra/edge"
    controllers(kube, {NAME: 2})
    status = run_pass(kube, events)
    assert [(t["name"], t["trafficPercent"]) for t in status["tracks"]] == [("stable", 100)]
    assert run_pass(kube, events) == status and kube.writes == []  # settled
    assert kube.dangling == []


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


@pytest.mark.parametrize("promote", [False, True], ids=["rollback", "promotion"])
def test_removing_the_canary_keeps_the_route_with_the_stable_backend_alone(promote: bool) -> None:
    """Rollback and promotion remove spec.canary, never spec.gateway: the route stays. The
    canary keeps its share until the stable track is back at its full count, ready (the stable
    track alone at once would take every request on 4 pods of 5); then the route sends 100 to
    the stable Service, and the canary's Service goes only once the route no longer sends
    requests to it (no write ever leaves the route with a missing backend)."""
    kube, events = RouteCheckingKube(), list[Event]()
    gateway_classifier(kube, modelSource={"storageUri": "pvc://models/mobilenet_v2.tflite"})
    run_pass(kube, events)
    controllers(kube, {NAME: 5, CANARY_NAME: 1})
    run_pass(kube, events)
    controllers(kube, {NAME: 4, CANARY_NAME: 1})
    run_pass(kube, events)
    assert backends(kube) == [("cats-stable", 80), ("cats-canary", 20)]

    spec: dict[str, Any] = {"canary": None}
    if promote:
        spec["modelSource"] = {"storageUri": "pvc://models/mobilenet_v2.tflite"}
    kube.update(CLASSIFIERS, NAMESPACE, NAME, {"spec": spec})
    status = run_pass(kube, events)
    assert status["canary"]["state"] == ("Promoting" if promote else "Removing")
    assert backends(kube) == [("cats-stable", 80), ("cats-canary", 20)]  # until stable is back
    assert kube.get(SERVICES, NAMESPACE, "cats-canary") is not None
    assert kube.get(DEPLOYMENTS, NAMESPACE, CANARY_NAME) is not None  # it serves until then
    assert status["canary"]["trafficPercent"] == 20  # the route's share

    controllers(kube, {NAME: 5, CANARY_NAME: 1})  # the stable track back at 5, ready
    kube.writes.clear()
    status = run_pass(kube, events)
    assert kube.get(SERVICES, NAMESPACE, "cats-canary") is None
    writes = [(w.verb, w.plural, w.name) for w in kube.writes if w.verb != "create"]
    route_patch = writes.index(("patch", HTTPROUTES.plural, NAME))
    assert writes.index(("delete", SERVICES.plural, "cats-canary")) > route_patch
    assert kube.get(DEPLOYMENTS, NAMESPACE, CANARY_NAME) is None
    assert "canary" not in status and status["gateway"] == "infra/edge"
    assert backends(kube) == [("cats-stable", 100)]
    assert kube.get(SERVICES, NAMESPACE, "cats-stable") is not None
    assert route(kube) is not None and kube.dangling == []
    controllers(kube, {NAME: 5})
    settled = run_pass(kube, events)
    assert run_pass(kube, events) == settled and kube.writes == []


def test_adding_a_canary_makes_its_service_before_the_route_sends_to_it() -> None:
    kube, events = RouteCheckingKube(), list[Event]()
    kube.classifier(NAME, {"replicas": 5, "gateway": GATEWAY})
    run_pass(kube, events)
    kube.update(CLASSIFIERS, NAMESPACE, NAME, {"spec": {"canary": {"trafficPercent": 20}}})
    run_pass(kube, events)
    assert backends(kube) == [("cats-stable", 100), ("cats-canary", 0)]
    assert kube.dangling == []


def test_removing_the_gateway_deletes_the_route_and_the_track_services() -> None:
    kube, events = RouteCheckingKube(), list[Event]()
    gateway_classifier(kube)
    run_pass(kube, events)
    kube.update(CLASSIFIERS, NAMESPACE, NAME, {"spec": {"gateway": None}})
    status = run_pass(kube, events)
    assert route(kube) is None
    assert all(kube.get(SERVICES, NAMESPACE, name) is None for name in TRACK_SERVICES)
    assert kube.get(SERVICES, NAMESPACE, NAME) is not None  # the classifier's own Service stays
    assert kube.get(DEPLOYMENTS, NAMESPACE, CANARY_NAME) is not None  # and the canary
    deletes = [(w.plural, w.name) for w in kube.writes if w.verb == "delete"]
    # The route first: it never sends requests to a deleted Service.
    assert deletes == [("httproutes", NAME), *(("services", name) for name in TRACK_SERVICES[::-1])]
    notes = [message for _, reason, message in events if reason == "Deleted"]
    assert f"Deleted HTTPRoute {NAME} (no spec.gateway)" in notes
    assert "gateway" not in status and kube.dangling == []
    # Gone: no more reads of them.
    counting = CountingKube()
    counting.objects = kube.objects
    body = counting.get(CLASSIFIERS, NAMESPACE, NAME)
    assert body is not None
    reconcile(counting, body, lambda *event: None)
    assert counting.reads.get(HTTPROUTES.plural, 0) == 0


def test_without_the_gateway_api_the_status_says_so_and_the_classifier_serves_on() -> None:
    kube, events = FakeKube(), list[Event]()
    kube.missing = {HTTPROUTES.plural}
    gateway_classifier(kube)
    status = run_pass(kube, events)  # no exception: a clear status instead
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "InvalidSpec"
    assert "spec.gateway: the Gateway API is not installed" in ready["message"]
    assert ("Warning", "InvalidSpec", ready["message"]) in events
    assert kube.get(DEPLOYMENTS, NAMESPACE, NAME) is not None  # the stable track is made
    assert not [w for w in kube.writes if w.plural == HTTPROUTES.plural]
    assert all(kube.get(SERVICES, NAMESPACE, name) is None for name in TRACK_SERVICES)


@pytest.mark.parametrize("canary", [None, {"trafficPercent": 20}], ids=["alone", "canary"])
def test_a_classifier_without_a_gateway_never_reads_an_httproute(
    canary: dict[str, Any] | None,
) -> None:
    """Gateway mode costs nothing to the classifiers that do not use it, with a canary or not:
    no read of a route nor of a track Service."""
    kube, events = CountingKube(), list[Event]()
    kube.classifier(NAME, {"replicas": 2, "canary": canary})
    run_pass(kube, events)
    controllers(kube, {NAME: 2, CANARY_NAME: 1})
    run_pass(kube, events)
    assert kube.reads.get(HTTPROUTES.plural, 0) == 0
    assert not [read for read in kube.names_read if read[0] == SERVICES.plural and read[1] != NAME]
