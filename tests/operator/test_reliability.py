"""The operator under adversity: a same-name stranger, a misbehaving API server, a SIGKILL.

Faults are injected over real HTTP by the emulator (`kube_emulator.Fault`); the journal of
requests tells which writes the operator made.
"""

import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kube_emulator import EmulatorThread, Fault
from kubeclassify_operator.handlers import RETRY_SECONDS
from kubeclassify_operator.kube import USER_AGENT
from operators import Journal, Namespace, OperatorProcess

REPO = Path(__file__).resolve().parents[2]


def owner_uid(child: dict[str, Any]) -> str | None:
    refs = child["metadata"].get("ownerReferences") or []
    return next((ref["uid"] for ref in refs if ref.get("controller")), None)


def test_a_same_name_stranger_is_left_alone_until_it_goes(ns: Namespace, journal: Journal) -> None:
    """ChildConflict: never patch someone else's Deployment; take over once it is deleted."""
    stranger = ns.cluster.create(
        ns.path("deployments"),
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            # None of our labels: its deletion sends the operator no event, only a recheck finds it.
            "metadata": {"name": "clash", "namespace": ns.name},
            "spec": {"replicas": 7, "template": {"spec": {"containers": [{"image": "theirs"}]}}},
        },
    )
    uid = ns.create_classifier("clash", {})["metadata"]["uid"]

    cond = ns.wait_condition("clash", "Ready", "False", "ChildConflict")
    assert "Deployment clash" in cond["message"]
    assert "not owned by this ImageClassifier" in cond["message"]
    available = ns.condition("clash", "DeploymentAvailable")
    assert available is not None and available["reason"] == "ChildConflict"
    assert owner_uid(ns.wait_for("services", "clash")) == uid  # the Service is not in conflict
    warnings = ns.cluster.wait(
        lambda: [e["type"] for e in ns.events("clash") if e["reason"] == "ChildConflict"],
        what="the ChildConflict event",
    )
    assert warnings == ["Warning"]

    # No hot loop: the operator keeps looking (its timer re-runs the pass) but writes nothing.
    ns.wait_handled("clash")
    mark, events = journal.mark(), len(ns.events("clash"))
    ns.cluster.wait(
        lambda: [
            c
            for c in journal.since(mark, ns.name)
            if (c.verb, c.resource, c.name) == ("get", "deployments", "clash")
        ],
        timeout=10,
        what="a recheck pass while in conflict",
    )
    assert journal.writes(mark, ns.name) == []
    assert ns.get("deployments", "clash") == stranger
    assert len(ns.events("clash")) == events

    ns.cluster.delete(ns.path("deployments", "clash"))
    ours = ns.wait_for(
        "deployments", "clash", lambda d: owner_uid(d) == uid, "the operator's own Deployment"
    )
    assert ours["spec"]["replicas"] == 1
    ns.wait_condition("clash", "Ready", "False", "ReplicasNotReady")


def only_one(ns: Namespace, kind: str) -> dict[str, Any]:
    """The single object of `kind` in the namespace (a duplicate or a loss fails)."""
    items: list[dict[str, Any]] = ns.cluster.items(ns.path(kind))
    (item,) = items
    return item


def converged(ns: Namespace, name: str, uid: str, replicas: int = 1) -> None:
    """Children exist once, owned, as declared; the status is written and up to date."""
    ns.wait_for("deployments", name, lambda d: d["spec"]["replicas"] == replicas)
    ns.wait_for("services", name)

    def status_current(ic: dict[str, Any]) -> bool:
        status = ic.get("status", {})
        conditions: list[dict[str, Any]] = status.get("conditions", [])
        ready = next((c for c in conditions if c["type"] == "Ready"), {})
        return (
            status.get("observedGeneration") == ic["metadata"]["generation"]
            and status.get("ready") == f"0/{replicas}"
            and ready.get("reason") == "ReplicasNotReady"
        )

    ns.wait_for("imageclassifiers", name, status_current, f"the status of {name} to catch up")
    for kind in ("deployments", "services"):
        child = only_one(ns, kind)
        assert child["metadata"]["name"] == name and owner_uid(child) == uid
    assert container_image(only_one(ns, "deployments")) == "ghcr.io/kubeclassify/modelserver:0.1.0"
    assert only_one(ns, "services")["spec"]["type"] == "LoadBalancer"


def container_image(deployment: dict[str, Any]) -> str:
    image: str = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    return image


@pytest.mark.parametrize(
    ("status", "retry_after"),
    [(409, None), (429, 1), (500, None), (503, None)],
    ids=["409", "429-retry-after", "500", "503"],
)
def test_refused_writes_are_retried_until_converged(
    ns: Namespace, journal: Journal, faults: list[Fault], status: int, retry_after: int | None
) -> None:
    """The operator's creates and status writes answered with errors: retried, not lost."""
    where = f"/namespaces/{ns.name}/"
    armed = [
        Fault("create", where + "deployments$", USER_AGENT, status, 1, retry_after),
        Fault("create", where + "services$", USER_AGENT, status, 1, retry_after),
        Fault("patch", where + "imageclassifiers/storm/status", USER_AGENT, status, 1, retry_after),
    ]
    faults.extend(armed)
    started = time.monotonic()
    uid = ns.create_classifier("storm", {})["metadata"]["uid"]
    converged(ns, "storm", uid)
    elapsed = time.monotonic() - started
    assert [f.hits for f in armed] == [f.times for f in armed]
    creates = [c.resource for c in journal.writes(0, ns.name) if c.verb == "create"]
    assert creates.count("deployments") == 2 and creates.count("services") == 2  # 1 landed each
    if retry_after:  # the server asked for a pause: the operator took it
        assert elapsed >= retry_after
    # Retried by the operator at once, not left to kopf's backoff for failed handlers.
    assert elapsed < RETRY_SECONDS
    print(f"converged {elapsed:.2f}s after creation despite three {status}s")

    # A pass started by a child's event (which kopf never retries) must not lose the status.
    ns.cluster.patch(  # a LoadBalancer is Ready once it has an address
        ns.path("services", "storm", "status"),
        {"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}},
    )
    ns.wait_condition("storm", "ServiceReady", "True", "EndpointAssigned")
    refused = Fault("patch", where + "imageclassifiers/storm/status", USER_AGENT, status, 2)
    faults.append(refused)
    ns.cluster.patch(
        ns.path("deployments", "storm", "status"),
        {"status": {"readyReplicas": 1, "conditions": [{"type": "Available", "status": "True"}]}},
    )
    ns.wait_condition("storm", "Ready", "True", "AllReplicasReady", timeout=RETRY_SECONDS)
    assert refused.hits == 2


def test_watch_faults_lose_no_change(
    ns: Namespace, emulator: EmulatorThread, faults: list[Fault], journal: Journal
) -> None:
    """Every watch cut at once; on reconnect 410 Gone, 503s and a 500: a spec change made
    while the operator was blind is still applied, and hand edits are restored afterwards."""
    uid = ns.create_classifier("tides", {})["metadata"]["uid"]
    converged(ns, "tides", uid)
    ns.wait_handled("tides")
    armed = [
        Fault("watch", "/imageclassifiers$", "kopf/", status=410),
        Fault("watch", "/imageclassifiers$", "kopf/", status=503, times=2),
        Fault("watch", "/deployments$", "kopf/", status=410),
        Fault("watch", "/deployments$", "kopf/", status=500),
    ]
    faults.extend(armed)
    started = time.monotonic()
    assert emulator.drop_watches() >= 6  # classifiers, 4 child kinds, CRDs
    ns.cluster.patch(ns.path("imageclassifiers", "tides"), {"spec": {"replicas": 3}})
    converged(ns, "tides", uid, replicas=3)
    elapsed = time.monotonic() - started
    ns.cluster.wait(lambda: all(f.hits == f.times for f in armed), what="every watch fault")
    print(f"spec change applied {elapsed:.2f}s after the watches were cut")

    # The Deployment watch works again: a hand edit is undone.
    ns.cluster.patch(
        ns.path("deployments", "tides"),
        {"spec": {"template": {"spec": {"containers": [{"name": "modelserver", "image": "x"}]}}}},
    )
    ns.wait_for(
        "deployments", "tides", lambda d: container_image(d) != "x", "the edit undone", timeout=5
    )


def test_a_watch_reconnect_with_nothing_changed_costs_no_passes(
    ns: Namespace, emulator: EmulatorThread, journal: Journal
) -> None:
    """Children replayed by a new watch (the emulator replays everything on a re-watch, a real
    API server after a 410 re-list) start no pass when their version was reconciled already
    (a pass begins by reading the classifier); at scale, a pass per child on every reconnect
    never settles."""
    uid = ns.create_classifier("calm", {})["metadata"]["uid"]
    converged(ns, "calm", uid)
    ns.wait_handled("calm")
    mark = journal.mark()
    assert emulator.drop_watches() >= 4

    def rewatched() -> bool:
        watches = {c.resource for c in journal.since(mark) if c.verb == "watch"}
        return {"deployments", "services", "pods", "horizontalpodautoscalers"} <= watches

    ns.cluster.wait(rewatched, what="kopf to watch the children again")
    time.sleep(1)  # the replayed events reach the handlers within milliseconds
    passes = [
        c
        for c in journal.since(mark, ns.name)
        if (c.verb, c.resource) == ("get", "imageclassifiers")
    ]
    assert passes == []
    # A real change after the reconnect is still noticed.
    ns.cluster.patch(ns.path("services", "calm"), {"spec": {"type": "NodePort"}})
    ns.wait_for("services", "calm", lambda s: s["spec"]["type"] == "LoadBalancer", "restored")


def test_a_slow_api_server_still_converges(ns: Namespace, faults: list[Fault]) -> None:
    """Every read and write of the operator's in this namespace answered after 0.3 s."""
    for verb in ("get", "list", "create", "patch"):
        faults.append(Fault(verb, f"/namespaces/{ns.name}/", USER_AGENT, delay=0.3, times=10_000))
    started = time.monotonic()
    uid = ns.create_classifier("sloth", {"replicas": 2})["metadata"]["uid"]
    converged(ns, "sloth", uid, replicas=2)
    print(f"converged {time.monotonic() - started:.2f}s after creation at 0.3 s a request")


def test_killed_between_deployment_and_service_then_restarted(
    ns: Namespace, operator_process: OperatorProcess, faults: list[Fault], journal: Journal
) -> None:
    """SIGKILL while the Service POST is in flight: the restart creates only what is missing,
    and a second restart with nothing to do writes nothing."""
    release = threading.Event()
    held = Fault("create", f"/namespaces/{ns.name}/services$", USER_AGENT, 503, hold=release)
    faults.append(held)
    uid = ns.create_classifier("phoenix", {})["metadata"]["uid"]
    ns.cluster.wait(lambda: held.hits, what="the Service POST to arrive")
    assert ns.get("deployments", "phoenix") is not None

    operator_process.kill()
    release.set()  # the POST the dead operator sent is refused: no Service was stored
    ns.cluster.wait(lambda: held.finished, what="the held POST to be answered")
    assert ns.get("services", "phoenix") is None
    assert "status" not in (ns.get("imageclassifiers", "phoenix") or {})

    started = time.monotonic()
    operator_process.start()
    converged(ns, "phoenix", uid)
    print(f"converged {time.monotonic() - started:.2f}s after the restart (liveness included)")
    creates = [c.resource for c in journal.writes(0, ns.name) if c.verb == "create"]
    assert creates.count("deployments") == 1  # not recreated
    assert creates.count("services") == 2  # the refused one, and one after the restart

    # Nothing changed: a restart reads everything and writes nothing, here or anywhere else.
    ns.wait_handled("phoenix")
    time.sleep(1)  # let the passes triggered by the restart's own writes finish
    mark = journal.mark()
    operator_process.stop()
    operator_process.start()
    ns.cluster.wait(
        lambda: [
            c
            for c in journal.since(mark, ns.name)
            if (c.resource, c.verb) == ("imageclassifiers", "get")
            and c.agent.startswith(USER_AGENT)
        ],
        what="the resumed operator's pass (its one read: the children come from the watches)",
    )
    time.sleep(1)  # its writes, if any, and kopf's own bookkeeping follow
    assert journal.writes(mark) == []


def test_sigterm_with_a_pass_stuck_on_a_request_exits_within_the_grace_period(
    ns: Namespace, operator_process: OperatorProcess, faults: list[Fault]
) -> None:
    """kopf waits for the handler threads it started, and a pass whose request the API server
    never answers would hold the exit past the Deployment's grace period: the operator gives
    up on it (passes are idempotent) and exits cleanly in time."""
    deploy = REPO / "deploy" / "operator.yaml"
    grace = yaml.safe_load(deploy.read_text())["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"
    ]
    release = threading.Event()
    stuck = Fault("get", f"/namespaces/{ns.name}/imageclassifiers/stuck$", USER_AGENT, hold=release)
    faults.append(stuck)
    ns.create_classifier("stuck", {})
    ns.cluster.wait(lambda: stuck.hits, what="the pass's first request to hang")
    log_start = len(operator_process.log_path.read_text())
    stopping = time.monotonic()
    operator_process.process.send_signal(signal.SIGTERM)
    try:
        code = operator_process.process.wait(grace + 30)
    finally:
        release.set()
    took = time.monotonic() - stopping
    log = operator_process.log_path.read_text()[log_start:]
    print(f"exited {took:.1f}s after SIGTERM with a request hanging")
    assert code == 0, log
    assert took < grace
    assert "abandoning passes in flight" in log and "Traceback" not in log, log
    operator_process.start()  # for the tests after this one
