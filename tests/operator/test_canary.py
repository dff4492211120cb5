"""Canary rollouts (issue 20): the pure decisions of `canary` (the split, the verdict, the
status per track), the two Deployments' labels and selectors, and whole passes of
`reconcile()` against the in-memory API, playing the Deployment controller and the kubelet."""

from typing import Any

import pytest
from fake_kube import FakeKube, Write, play_controllers, played_pod
from kubeclassify_operator import canary
from kubeclassify_operator.builders import Owner, build_deployment
from kubeclassify_operator.kube import CLASSIFIERS, DEPLOYMENTS
from kubeclassify_operator.names import TRACK_LABEL, Track, selector_labels
from kubeclassify_operator.reconcile import reconcile
from kubeclassify_operator.spec import parse_spec
from kubeclassify_operator.status import CanaryStatus

NAME = "cats"
CANARY_NAME = f"{NAME}-canary"
NAMESPACE = "default"
OWNER = Owner(NAME, NAMESPACE, "uid-1")
NOW = "2026-01-01T00:10:00Z"
Event = tuple[str, str, str]
MOBILENET = {"storageUri": "pvc://models/mobilenet_v2.tflite"}


def deployment(replicas: int, ready: int, track: Track = Track.STABLE) -> dict[str, Any]:
    spec = parse_spec({"replicas": replicas})
    built = build_deployment(OWNER, spec, track=track, replicas=replicas)
    built["metadata"].update(generation=1, ownerReferences=[{"controller": True, "uid": "uid-1"}])
    built["status"] = {
        "observedGeneration": 1,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": ready,
    }
    return built


LOAD_FAILED = {
    "terminated": {
        "exitCode": 1,
        "reason": "Error",
        "message": "cannot serve: MODEL_FILE=/mnt/pvc/models/broken.tflite cannot be loaded",
    }
}


# ---------------------------------------------------------------------------- the split


@pytest.mark.parametrize(
    ("replicas", "percent", "stable", "count"),
    [
        (5, 20, 4, 1),
        (10, 20, 8, 2),
        (10, 50, 5, 5),
        (1, 20, 1, 1),  # the stable track keeps a pod below 100%
        (4, 100, 0, 4),
        (5, 0, 5, 0),
    ],
)
def test_the_replicas_are_split_by_the_percent_once_the_canary_is_ready(
    replicas: int, percent: int, stable: int, count: int
) -> None:
    spec = parse_spec({"replicas": replicas, "canary": {"trafficPercent": percent}})
    ready = deployment(count, count, Track.CANARY)
    pods = [played_pod(ready, i, True) for i in range(count)]
    state = canary.assess(spec, ready, pods, None, NOW)
    assert state is not None and state.state == "Serving"
    split = canary.split(spec, state, deployment(replicas, replicas), ready, pods)
    assert (split.stable, split.canary) == (stable, count)
    assert split.canary_weight == (percent if count else 0)


def test_the_stable_track_keeps_its_count_until_every_canary_pod_is_ready() -> None:
    spec = parse_spec({"replicas": 10, "canary": {"trafficPercent": 20}})
    half = deployment(2, 1, Track.CANARY)
    pods = [played_pod(half, 0, True), played_pod(half, 1, False)]
    state = canary.assess(spec, half, pods, None, NOW)
    assert state is not None and state.state == "Progressing" and state.unready_since == NOW
    split = canary.split(spec, state, deployment(10, 10), half, pods)
    assert (split.stable, split.canary, split.canary_weight) == (10, 2, 0)


def test_with_autoscaling_the_canary_takes_its_share_of_the_hpas_count() -> None:
    spec = parse_spec({"autoscaling": {"maxReplicas": 10}, "canary": {"trafficPercent": 20}})
    ready = deployment(2, 2, Track.CANARY)
    pods = [played_pod(ready, i, True) for i in range(2)]
    state = canary.assess(spec, ready, pods, None, NOW)
    split = canary.split(spec, state, deployment(8, 8), ready, pods)
    assert (split.stable, split.canary) == (8, 2)  # 2 of 10 pods: 20%, the HPA's 8 untouched


# ---------------------------------------------------------------------------- the verdict


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        (LOAD_FAILED, "ModelLoadFailed"),
        ({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}}, "CrashLoopBackOff"),
        ({"terminated": {"exitCode": 137, "reason": "OOMKilled"}}, "OOMKilled"),
    ],
)
def test_a_failing_canary_is_rolled_back_at_once(state: dict[str, Any], reason: str) -> None:
    spec = parse_spec({"replicas": 5, "canary": {"trafficPercent": 20, "modelSource": MOBILENET}})
    failing = deployment(1, 0, Track.CANARY)
    verdict = canary.assess(spec, failing, [played_pod(failing, 0, False, state)], None, NOW)
    assert verdict is not None and verdict.state == "RolledBack" and verdict.reason == reason
    split = canary.split(spec, verdict, deployment(4, 4), failing, [])
    assert (split.stable, split.canary, split.canary_weight) == (5, 0, 0)


def test_a_canary_not_ready_for_longer_than_the_bound_is_rolled_back() -> None:
    spec = parse_spec({"replicas": 5, "canary": {"trafficPercent": 20, "maxUnreadySeconds": 60}})
    slow = deployment(1, 0, Track.CANARY)
    pods = [played_pod(slow, 0, False)]
    first = canary.assess(spec, slow, pods, None, "2026-01-01T00:00:00Z")
    assert first is not None and first.state == "Progressing"
    before = first.model_dump(by_alias=True, exclude_none=True)
    within = canary.assess(spec, slow, pods, before, "2026-01-01T00:01:00Z")
    assert within is not None and within.state == "Progressing"
    late = canary.assess(spec, slow, pods, before, "2026-01-01T00:01:01Z")
    assert late is not None and late.state == "RolledBack" and late.reason == "CanaryNotReady"
    assert late.message == "0/1 canary pods ready for more than 60s (spec.canary.maxUnreadySeconds)"


def test_a_rollback_holds_for_that_canary_spec_and_a_changed_one_tries_again() -> None:
    spec = parse_spec({"replicas": 5, "canary": {"trafficPercent": 20, "modelSource": MOBILENET}})
    failing = deployment(1, 0, Track.CANARY)
    rolled = canary.assess(spec, failing, [played_pod(failing, 0, False, LOAD_FAILED)], None, NOW)
    assert rolled is not None
    before = rolled.model_dump(by_alias=True, exclude_none=True)
    # Its pods are gone (0 replicas): it stays rolled back, even at another percent.
    more = parse_spec({"replicas": 5, "canary": {"trafficPercent": 40, "modelSource": MOBILENET}})
    again = canary.assess(more, deployment(0, 0, Track.CANARY), [], before, NOW)
    assert again is not None and again.state == "RolledBack" and again.reason == "ModelLoadFailed"
    fixed = {**MOBILENET, "storageUri": "pvc://models/mobilenet_v2_fixed.tflite"}
    changed = parse_spec({"replicas": 5, "canary": {"trafficPercent": 20, "modelSource": fixed}})
    retried = canary.assess(changed, deployment(0, 0, Track.CANARY), [], before, NOW)
    assert retried is not None and retried.state == "Progressing"


def test_the_promoted_spec_hashes_as_the_canary_did() -> None:
    with_canary = parse_spec(
        {"replicas": 5, "canary": {"trafficPercent": 20, "modelSource": MOBILENET}}
    )
    promoted = parse_spec({"replicas": 5, "modelSource": MOBILENET})
    assert canary.spec_hash(with_canary) == canary.spec_hash(promoted)
    assert canary.spec_hash(with_canary) != canary.spec_hash(parse_spec({"replicas": 5}))


def test_the_gateway_is_not_what_the_pods_run() -> None:
    """Adding or removing spec.gateway is no new canary (a rollback holds) and no promotion."""
    canary_spec = {"trafficPercent": 20, "modelSource": MOBILENET}
    plain = parse_spec({"replicas": 5, "canary": canary_spec})
    routed = parse_spec({"replicas": 5, "canary": canary_spec, "gateway": {"name": "edge"}})
    assert canary.spec_hash(plain) == canary.spec_hash(routed)


def test_the_share_in_force_is_what_the_ready_pods_give() -> None:
    spec = parse_spec({"replicas": 10, "canary": {"trafficPercent": 20}})
    stable, mine = deployment(8, 8), deployment(2, 2, Track.CANARY)
    state = CanaryStatus(state="Serving", traffic_percent=0, requested_percent=20, spec_hash="x")
    stable_pods = [played_pod(stable, i, i < 7) for i in range(8)]  # one stable pod not ready
    canary_pods = [played_pod(mine, i, True) for i in range(2)]
    listed, shown = canary.tracks(spec, state, stable, mine, stable_pods, canary_pods, NAME)
    assert [(t.name, t.ready_replicas, t.traffic_percent) for t in listed] == [
        ("stable", 7, 78),
        ("canary", 2, 22),
    ]
    assert shown is not None and shown.traffic_percent == 22


# ---------------------------------------------------------------------------- the Deployments


def test_the_canary_deployment_never_selects_a_stable_pod() -> None:
    """The stable selector stays as it was (immutable); the canary's adds its track."""
    spec = parse_spec({"canary": {"trafficPercent": 20}})
    stable = build_deployment(OWNER, spec)
    mine = build_deployment(OWNER, spec.canary_spec(), replicas=1, track=Track.CANARY)
    assert stable["spec"]["selector"]["matchLabels"] == selector_labels(NAME)
    assert mine["metadata"]["name"] == CANARY_NAME
    canary_selector = mine["spec"]["selector"]["matchLabels"]
    stable_labels = stable["spec"]["template"]["metadata"]["labels"]
    assert stable_labels[TRACK_LABEL] == "stable"
    assert not canary_selector.items() <= stable_labels.items()
    # Both tracks' pods are the Service's.
    assert selector_labels(NAME).items() <= mine["spec"]["template"]["metadata"]["labels"].items()


# ---------------------------------------------------------------------------- whole passes


def run_pass(kube: FakeKube, events: list[Event]) -> dict[str, Any]:
    body = kube.get(CLASSIFIERS, NAMESPACE, NAME)
    assert body is not None
    kube.writes.clear()
    return reconcile(kube, body, lambda *event: events.append(event))


def controllers(kube: FakeKube, ready: dict[str, int], state: dict[str, Any] | None = None) -> None:
    play_controllers(kube, NAMESPACE, ready, state)


def replicas(kube: FakeKube) -> tuple[int, int | None]:
    stable = kube.get(DEPLOYMENTS, NAMESPACE, NAME)
    mine = kube.get(DEPLOYMENTS, NAMESPACE, CANARY_NAME)
    assert stable is not None
    return stable["spec"]["replicas"], mine["spec"]["replicas"] if mine else None


def reasons(events: list[Event]) -> list[str]:
    return [reason for _, reason, _ in events]


def test_a_canary_starts_beside_the_stable_track_then_takes_its_share() -> None:
    kube, events = FakeKube(), list[Event]()
    kube.classifier(NAME, {"replicas": 5})
    run_pass(kube, events)
    controllers(kube, {NAME: 5})
    run_pass(kube, events)
    body = kube.get(CLASSIFIERS, NAMESPACE, NAME)
    assert body is not None
    spec = {"replicas": 5, "canary": {"trafficPercent": 20, "modelSource": MOBILENET}}
    kube.update(CLASSIFIERS, NAMESPACE, NAME, {"spec": spec})

    status = run_pass(kube, events)
    assert Write("create", DEPLOYMENTS.plural, CANARY_NAME) in kube.writes
    assert replicas(kube) == (5, 1)  # the stable track is not shrunk yet
    assert status["canary"]["state"] == "Progressing" and status["canary"]["trafficPercent"] == 0
    assert "CanaryStarted" in reasons(events)

    controllers(kube, {NAME: 5, CANARY_NAME: 1})
    run_pass(kube, events)
    assert replicas(kube) == (4, 1)
    controllers(kube, {NAME: 4, CANARY_NAME: 1})
    status = run_pass(kube, events)
    assert status["canary"]["state"] == "Serving" and status["canary"]["trafficPercent"] == 20
    assert [(t["name"], t["readyReplicas"], t["trafficPercent"]) for t in status["tracks"]] == [
        ("stable", 4, 80),
        ("canary", 1, 20),
    ]
    assert status["tracks"][1]["model"] == "pvc://models/mobilenet_v2.tflite (auto)"
    assert status["ready"] == "5/5"
    assert run_pass(kube, events) == status and kube.writes == []  # settled: nothing to write


def serving_canary(kube: FakeKube, events: list[Event]) -> None:
    spec = {"replicas": 5, "canary": {"trafficPercent": 20, "modelSource": MOBILENET}}
    kube.classifier(NAME, spec)
    run_pass(kube, events)
    controllers(kube, {NAME: 5, CANARY_NAME: 1})
    run_pass(kube, events)
    controllers(kube, {NAME: 4, CANARY_NAME: 1})
    status = run_pass(kube, events)
    assert status["canary"]["state"] == "Serving"


def test_removing_the_canary_restores_the_stable_track_before_deleting_it() -> None:
    kube, events = FakeKube(), list[Event]()
    serving_canary(kube, events)
    kube.update(CLASSIFIERS, NAMESPACE, NAME, {"spec": {"canary": None}})
    status = run_pass(kube, events)
    assert replicas(kube) == (5, 1)  # the canary serves on meanwhile
    assert status["canary"]["state"] == "Removing" and events[-1][1] == "CanaryRemoved"
    controllers(kube, {NAME: 5, CANARY_NAME: 1})
    status = run_pass(kube, events)
    assert Write("delete", DEPLOYMENTS.plural, CANARY_NAME) in kube.writes
    assert "canary" not in status and [t["name"] for t in status["tracks"]] == ["stable"]


def test_promotion_rolls_the_stable_track_to_the_canarys_spec_while_the_canary_serves() -> None:
    kube, events = FakeKube(), list[Event]()
    serving_canary(kube, events)
    before = kube.get(DEPLOYMENTS, NAMESPACE, NAME)
    promoted = {"replicas": 5, "modelSource": MOBILENET, "canary": None}
    kube.update(CLASSIFIERS, NAMESPACE, NAME, {"spec": promoted})
    status = run_pass(kube, events)
    after = kube.get(DEPLOYMENTS, NAMESPACE, NAME)
    assert before is not None and after is not None
    assert after["spec"]["template"] != before["spec"]["template"]  # now serves MobileNet
    assert replicas(kube) == (5, 1)
    assert status["canary"]["state"] == "Promoting" and "CanaryPromoted" in reasons(events)
    controllers(kube, {NAME: 5, CANARY_NAME: 1})
    status = run_pass(kube, events)
    assert kube.get(DEPLOYMENTS, NAMESPACE, CANARY_NAME) is None and "canary" not in status


def test_a_canary_whose_model_fails_to_load_is_rolled_back_and_not_retried() -> None:
    kube, events = FakeKube(), list[Event]()
    broken = {"storageUri": "pvc://models/broken.tflite"}
    spec = {"replicas": 5, "canary": {"trafficPercent": 20, "modelSource": broken}}
    kube.classifier(NAME, spec)
    run_pass(kube, events)
    controllers(kube, {NAME: 5, CANARY_NAME: 0}, state=LOAD_FAILED)
    status = run_pass(kube, events)
    assert replicas(kube) == (5, 0)
    assert status["canary"]["state"] == "RolledBack"
    assert status["canary"]["reason"] == "ModelLoadFailed"
    assert ("Warning", "CanaryRolledBack") in [event[:2] for event in events]
    # The classifier serves on: the canary's trouble is not the stable track's.
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "LoadBalancerPending"
    controllers(kube, {NAME: 5, CANARY_NAME: 0})
    assert run_pass(kube, events)["canary"]["state"] == "RolledBack" and replicas(kube) == (5, 0)

    fixed = {"replicas": 5, "canary": {"trafficPercent": 20, "modelSource": MOBILENET}}
    kube.update(CLASSIFIERS, NAMESPACE, NAME, {"spec": fixed})
    status = run_pass(kube, events)
    assert replicas(kube) == (5, 1) and status["canary"]["state"] == "Progressing"


def test_with_autoscaling_the_canary_follows_the_hpas_count_and_the_hpa_keeps_its_own() -> None:
    kube, events = FakeKube(), list[Event]()
    autoscaling = {"minReplicas": 2, "maxReplicas": 10}
    kube.classifier(NAME, {"autoscaling": autoscaling, "canary": {"trafficPercent": 20}})
    run_pass(kube, events)
    assert replicas(kube) == (2, 1)  # minReplicas, and at least 1 canary pod
    kube.update(DEPLOYMENTS, NAMESPACE, NAME, {"spec": {"replicas": 8}})  # the HPA scales up
    controllers(kube, {NAME: 8, CANARY_NAME: 1})
    run_pass(kube, events)
    assert replicas(kube) == (8, 2)  # 2 of 10 pods; the HPA's 8 left alone
    controllers(kube, {NAME: 8, CANARY_NAME: 2})
    status = run_pass(kube, events)
    assert replicas(kube) == (8, 2) and status["canary"]["trafficPercent"] == 20
