"""The canary's decisions, as pure functions of the spec, the children as read and the previous
status: how it fares (`assess`), how the replicas are split (`split`), and what the status
says per track (`tracks`).

The rules they keep: no traffic to a canary that is not ready (its pods are in the Service only
once ready, and a gateway's weight is 0 until they all are); the stable track keeps all its
replicas until the canary's are ready; a canary that fails is rolled back at once (its
replicas to 0, the stable track's back to its full count), and stays so until its spec changes;
a removed canary serves until the stable track has all its pods ready again.
"""

import datetime
from typing import Any

from kubeclassify_operator.builders import digest, is_subset
from kubeclassify_operator.children import Object, Split
from kubeclassify_operator.names import EventReason, Reason, Track
from kubeclassify_operator.routes import route_share
from kubeclassify_operator.spec import ImageClassifierSpec
from kubeclassify_operator.status import (
    CanaryStatus,
    TrackStatus,
    current_pods,
    desired_replicas,
    model_status,
    pod_problem,
    pod_ready,
)

# What the pods say that rolls a canary back at once; anything else (an image that cannot be
# pulled, no node that fits, a slow model) waits for maxUnreadySeconds.
FAILURES = (Reason.CRASH_LOOP_BACK_OFF, Reason.MODEL_LOAD_FAILED, Reason.OOM_KILLED)


def spec_hash(spec: ImageClassifierSpec) -> str:
    """A digest of what the canary's pods run (the stable track's, without a canary): equal for
    a canary and the stable spec it is promoted to. The counts and the gateway are not what
    pods run."""
    what = spec.canary_spec().model_dump(
        mode="json", exclude={"replicas", "autoscaling", "canary", "gateway"}
    )
    return digest(what)


def _seconds_between(start: str, end: str) -> float:
    parse = datetime.datetime.fromisoformat
    return (parse(end) - parse(start)).total_seconds()


def assess(
    spec: ImageClassifierSpec,
    canary: Object,
    pods: list[dict[str, Any]],
    previous: dict[str, Any] | None,
    now: str,
) -> CanaryStatus | None:
    """How the canary fares, from its Deployment as read (`canary`), the canary track's pods
    and the previous `status.canary`; None when there is no canary at all.

    The share in force is filled in by `tracks`, from the ready pods."""
    before = previous or {}
    if spec.canary is None:
        if canary is None:
            return None
        promoted = before.get("state") == "Promoting" or before.get("specHash") == spec_hash(spec)
        return CanaryStatus(
            state="Promoting" if promoted else "Removing",
            traffic_percent=0,
            spec_hash=before.get("specHash") or spec_hash(spec),
        )
    wanted = spec.canary.traffic_percent
    hashed = spec_hash(spec)
    same = before.get("specHash") == hashed
    if same and before.get("state") == "RolledBack":
        return CanaryStatus.model_validate({**before, "requestedPercent": wanted})
    mine = current_pods(canary, pods) if canary is not None else []
    problem = pod_problem(mine)
    if problem is not None and problem.reason in FAILURES:
        return CanaryStatus(
            state="RolledBack",
            traffic_percent=0,
            requested_percent=wanted,
            spec_hash=hashed,
            reason=problem.reason,
            message=problem.message,
        )
    replicas = desired_replicas(canary) if canary is not None else 0
    ready = sum(1 for pod in mine if pod_ready(pod))
    if canary is not None and ready >= replicas and (replicas or not wanted):
        return CanaryStatus(
            state="Serving", traffic_percent=0, requested_percent=wanted, spec_hash=hashed
        )
    since: str = before.get("unreadySince") or now if same else now
    bound = spec.canary.max_unready_seconds
    if _seconds_between(since, now) > bound:
        return CanaryStatus(
            state="RolledBack",
            traffic_percent=0,
            requested_percent=wanted,
            spec_hash=hashed,
            reason=Reason.CANARY_NOT_READY,
            message=f"{ready}/{replicas} canary pods ready for more than {bound}s"
            " (spec.canary.maxUnreadySeconds)",
        )
    return CanaryStatus(
        state="Progressing",
        traffic_percent=0,
        requested_percent=wanted,
        spec_hash=hashed,
        unready_since=since,
    )


def split(
    spec: ImageClassifierSpec,
    state: CanaryStatus | None,
    stable: Object,
    canary: Object,
    canary_pods: list[dict[str, Any]],
) -> Split:
    """Each track's replicas.

    Without autoscaling, spec.replicas N is split: the canary gets round(N x p / 100) (at least
    1 for p > 0), the stable track the rest (at least 1 for p < 100), so the Service, spreading
    connections evenly over the ready pods, sends the canary about p%. With autoscaling the
    HPA owns the stable track's count S, and the canary gets round(S x p / (100 - p)) (at
    least 1; S for p = 100), which gives it p% of all pods.

    Guardrails: the stable track keeps N until every canary pod is ready; a canary rolled back
    gets 0 pods. A canary being removed keeps what it has until the stable track, back at N,
    has every pod of its current spec ready (see `stable_settled`)."""
    if spec.autoscaling is not None:
        current = stable.get("spec", {}).get("replicas") if stable else None
        full = int(current) if current is not None else spec.autoscaling.min_replicas
    else:
        full = spec.replicas
    if state is None or spec.canary is None:
        return Split(stable=full, keep_canary=state is not None)
    percent = spec.canary.traffic_percent
    if state.state == "RolledBack" or percent == 0 or full == 0:
        return Split(stable=full, canary=0)
    if spec.autoscaling is not None:
        count = full if percent == 100 else max(1, round(full * percent / (100 - percent)))
        rest = full
    else:
        count = max(1, round(full * percent / 100))
        rest = full - count if percent == 100 else max(1, full - count)
    mine = current_pods(canary, canary_pods) if canary is not None else []
    ready = sum(1 for pod in mine if pod_ready(pod))
    all_ready = canary is not None and desired_replicas(canary) == count and ready >= count
    return Split(
        stable=rest if all_ready else full,
        canary=count,
        canary_weight=percent if all_ready else 0,
    )


def stable_settled(desired: dict[str, Any], current: Object) -> bool:
    """Whether the stable Deployment is as desired and every pod of it is ready: the moment a
    canary being removed may go. False while this pass has to write it (a promotion's new
    template, the count back to N), and while its controller has not caught up."""
    if current is None or not is_subset(desired, current):
        return False
    status = current.get("status", {})
    generation = current.get("metadata", {}).get("generation")
    replicas = desired_replicas(current)
    return (
        status.get("observedGeneration") == generation
        and int(status.get("updatedReplicas", 0)) == replicas
        and int(status.get("replicas", 0)) == replicas
        and int(status.get("readyReplicas", 0)) >= replicas
    )


def tracks(
    spec: ImageClassifierSpec,
    state: CanaryStatus | None,
    stable: Object,
    canary: Object,
    stable_pods: list[dict[str, Any]],
    canary_pods: list[dict[str, Any]],
    name: str,
    route: Object = None,
) -> tuple[list[TrackStatus], CanaryStatus | None]:
    """The status per track, and the canary's with the share in force.

    The share is what the ready pods give (each ready pod of either track is one endpoint of
    the Service), or with a gateway the weights of the HTTPRoute as it stands (`route`: none
    yet, or no Gateway API, is the replica split)."""
    ready = {
        Track.STABLE: _ready(stable, stable_pods),
        Track.CANARY: _ready(canary, canary_pods),
    }
    total = sum(ready.values())
    share = {track: round(100 * count / total) if total else 0 for track, count in ready.items()}
    weight = route_share(route) if spec.gateway is not None and state is not None else None
    if weight is not None:
        share = {Track.STABLE: 100 - weight, Track.CANARY: weight}
    if state is None:
        share[Track.STABLE] = 100 if ready[Track.STABLE] else 0
    models = {Track.STABLE: spec, Track.CANARY: spec.canary_spec()}
    listed = [
        TrackStatus(
            name=track.value,
            deployment=track.deployment(name),
            replicas=desired_replicas(deployment) if deployment else 0,
            ready_replicas=ready[track],
            model=model_status(models[track], []).summary,
            traffic_percent=share[track],
        )
        for track, deployment in ((Track.STABLE, stable), (Track.CANARY, canary))
        if track is Track.STABLE or state is not None
    ]
    shown = state.model_copy(update={"traffic_percent": share[Track.CANARY]}) if state else None
    return listed, shown


def _ready(deployment: Object, pods: list[dict[str, Any]]) -> int:
    """The ready pods of a track (of any template: an older one's serve too)."""
    if deployment is None:
        return 0
    return sum(1 for pod in pods if pod_ready(pod) and not pod["metadata"].get("deletionTimestamp"))


def events(before: dict[str, Any] | None, after: CanaryStatus | None) -> list[tuple[str, str, str]]:
    """The Events a change of the canary's state is worth: (type, reason, message)."""
    was = (before or {}).get("state")
    now = after.state if after else None
    if now == was and (after is None or (before or {}).get("specHash") == after.spec_hash):
        return []
    if after is None:
        return []  # the canary's Deployment was deleted: the removal was announced
    if now == "RolledBack":
        return [
            (
                "Warning",
                EventReason.CANARY_ROLLED_BACK,
                f"canary rolled back ({after.reason}): {after.message}; it gets no traffic until"
                " spec.canary changes",
            )
        ]
    if now == "Promoting":
        return [
            (
                "Normal",
                EventReason.CANARY_PROMOTED,
                "canary promoted: the stable track rolls out to its spec; the canary serves"
                " until that is done",
            )
        ]
    if now == "Removing":
        return [
            (
                "Normal",
                EventReason.CANARY_REMOVED,
                "spec.canary removed: the stable track goes back to its full count, then the"
                " canary's Deployment is deleted",
            )
        ]
    if was is None or (before or {}).get("specHash") != after.spec_hash:
        return [
            (
                "Normal",
                EventReason.CANARY_STARTED,
                f"canary started at {after.requested_percent}% of the traffic",
            )
        ]
    return []
