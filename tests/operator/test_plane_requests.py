"""What the operator asks of a real API server, from its audit log (issue 9: at scale, every
pod event cost a full pass of reads, and 500 classifiers kept the API server busy for minutes).

A burst of child changes shares one pass; a change the status does not read writes nothing;
the echo of the operator's own write starts no pass; a pass reads the children and pods from
the copies its watches keep (issue 18), not from the API server.
"""

import datetime
import time

from control_plane import OPERATOR_USER, ControlPlane, rbac_triple
from operators import Namespace

WAIT = 30
QUIET = 5.0  # seconds without a request about the classifier: the operator has settled


def requests_about(
    plane: ControlPlane, namespace: str, since: datetime.datetime
) -> list[tuple[str, str, str]]:
    """(resource, verb, name) of the operator's requests in `namespace` received since then."""
    found = []
    for event in plane.audit_events(OPERATOR_USER):
        ref = event.get("objectRef", {})
        received = datetime.datetime.fromisoformat(event["requestReceivedTimestamp"])
        triple = rbac_triple(event)
        if triple and ref.get("namespace") == namespace and received >= since:
            found.append((triple[1], triple[2], ref.get("name", "")))
    return found


def reads_of_children(made: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """The reads among `made` of anything but the classifier."""
    return [r for r in made if r[1] in ("get", "list") and not r[0].startswith("imageclass")]


def settle(plane: ControlPlane, namespace: str) -> datetime.datetime:
    """Wait until the operator has sent nothing about `namespace` for QUIET seconds, counted
    from now at the earliest (a coalesced pass starts a little after its trigger)."""
    start = datetime.datetime.now(datetime.UTC)
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        time.sleep(1)
        since = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=QUIET)
        if since >= start and not requests_about(plane, namespace, since):
            return datetime.datetime.now(datetime.UTC)
    raise AssertionError(f"the operator kept sending requests about {namespace}")


def test_a_burst_of_pod_changes_costs_one_pass_and_no_write(
    plane_ns: Namespace, plane: ControlPlane
) -> None:
    """Five quick changes to a pod that alter nothing the status reads (an annotation): one
    pass reads them all (not five), and writes nothing (the status is unchanged)."""
    ns = plane_ns
    ns.create_classifier("cats", {"replicas": 1})
    ns.wait_condition("cats", "Ready", "False", "Unschedulable", timeout=WAIT)  # no node
    (pod,) = ns.pods("cats")
    mark = settle(plane, ns.name)
    for i in range(5):
        patch = {"metadata": {"annotations": {"example.com/touched": str(i)}}}
        ns.cluster.patch(ns.path("pods", pod["metadata"]["name"]), patch)
    settle(plane, ns.name)
    made = requests_about(plane, ns.name, mark)
    passes = [r for r in made if r == ("imageclassifiers", "get", "cats")]
    writes = [r for r in made if r[1] in ("create", "update", "patch", "delete")]
    assert 1 <= len(passes) <= 2, made  # 2 if the burst straddles the coalescing window
    assert writes == [], made
    assert reads_of_children(made) == [], made  # the pod and the rest: the watches' copies


def test_a_new_classifier_settles_in_a_few_passes(plane_ns: Namespace, plane: ControlPlane) -> None:
    """Creating a classifier: what follows the first pass (the Deployment controller, the pod,
    the scheduler) is read together. Before coalescing and echo detection it took 7 passes or
    more."""
    ns = plane_ns
    mark = datetime.datetime.now(datetime.UTC)
    ns.create_classifier("dogs", {"replicas": 1})
    ns.wait_condition("dogs", "Ready", "False", "Unschedulable", timeout=WAIT)
    settle(plane, ns.name)
    made = requests_about(plane, ns.name, mark)
    passes = [r for r in made if r == ("imageclassifiers", "get", "dogs")]
    assert 2 <= len(passes) <= 4, made
    status_writes = [r for r in made if r[0] == "imageclassifiers/status"]
    assert len(status_writes) == 2, made  # the first status, then Unschedulable
    # The first pass looks for the Deployment and Service it is about to create (the watches
    # have no copy: a same-name stranger is not labelled as ours); no pass lists the pods.
    assert sorted(reads_of_children(made)) == [
        ("deployments", "get", "dogs"),
        ("services", "get", "dogs"),
    ], made


def test_the_echo_of_its_own_writes_starts_no_pass(
    plane_ns: Namespace, plane: ControlPlane
) -> None:
    """A spec change only the Service carries, on a settled classifier: the pass patches the
    Service and knows the version it wrote, so the Service's MODIFIED event (the echo of that
    write) starts no second pass. Nothing else moves (no node: the pod stays Pending; the
    Deployment is not written), so a second pass could only come from the echo."""
    ns = plane_ns
    ns.create_classifier("dogs", {"replicas": 1})
    ns.wait_condition("dogs", "Ready", "False", "Unschedulable", timeout=WAIT)
    mark = settle(plane, ns.name)
    ns.cluster.patch(ns.path("imageclassifiers", "dogs"), {"spec": {"service": {"port": 8080}}})
    ns.wait_for("services", "dogs", lambda s: s["spec"]["ports"][0]["port"] == 8080, timeout=WAIT)
    settle(plane, ns.name)
    made = requests_about(plane, ns.name, mark)
    assert ("services", "patch", "dogs") in made, made
    assert ("deployments", "patch", "dogs") not in made, made
    passes = [r for r in made if r == ("imageclassifiers", "get", "dogs")]
    assert len(passes) == 1, made  # the spec change's; the echo's would be a second
