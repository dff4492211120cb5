"""The Lease records leader election writes, and when a standby may take over (pure parts;
test_plane_leader.py runs the election against a real API server)."""

from kubeclassify_operator.leader import LEASE_DURATION, claimed, holder_of, may_take, released

NOW = "2026-11-26T01:00:00.000000Z"
LATER = "2026-11-26T01:00:02.000000Z"


def lease(holder: str | None, duration: int = 15, transitions: int = 3) -> dict[str, object]:
    spec: dict[str, object] = {"leaseDurationSeconds": duration, "leaseTransitions": transitions}
    if holder:
        spec["holderIdentity"] = holder
    return {"metadata": {"name": "l", "resourceVersion": "7"}, "spec": spec}


def test_a_held_lease_is_taken_only_once_it_stopped_changing_for_its_duration() -> None:
    held = lease("a")
    assert not may_take(held, "b", unchanged_for=0)
    assert not may_take(held, "b", unchanged_for=LEASE_DURATION - 0.1)
    assert may_take(held, "b", unchanged_for=LEASE_DURATION)
    assert may_take(lease("a", duration=1), "b", unchanged_for=1)  # the holder's own duration
    assert may_take(held, "a", unchanged_for=0)  # our own (e.g. this pod restarted)
    assert may_take(lease(None), "b", unchanged_for=0)  # released: no waiting


def test_claims_count_transitions_and_keep_the_resource_version() -> None:
    new = claimed({"metadata": {"name": "l"}}, "a", NOW)
    assert new["spec"] == {
        "holderIdentity": "a",
        "leaseDurationSeconds": int(LEASE_DURATION),
        "acquireTime": NOW,
        "renewTime": NOW,
        "leaseTransitions": 0,
    }
    taken = claimed(lease("a"), "b", NOW)
    assert holder_of(taken) == "b" and taken["spec"]["leaseTransitions"] == 4
    assert taken["metadata"]["resourceVersion"] == "7"  # the write fails if someone came first
    renewed = claimed(taken, "b", LATER)
    assert renewed["spec"]["acquireTime"] == NOW and renewed["spec"]["renewTime"] == LATER
    assert renewed["spec"]["leaseTransitions"] == 4


def test_a_release_leaves_no_holder() -> None:
    free = released(lease("a"), LATER)
    assert holder_of(free) == "" and free["spec"]["leaseDurationSeconds"] == 1
    assert free["spec"]["leaseTransitions"] == 3
