"""One level-based pass: bring the children to the desired state, then report the status.

Every step compares first and writes only on a difference, so running it again changes
nothing; that is what lets any event (the classifier's or a child's) simply re-run it, and
what makes it safe to retry a pass that an API error cut short.

A same-name object that this classifier does not control is never written: the pass skips
it and reports Ready=False/ChildConflict until it is gone.
"""

import datetime
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from kubernetes.client.exceptions import ApiException

from kubeclassify_operator import builders, canary, rejections, status
from kubeclassify_operator.builders import Owner
from kubeclassify_operator.children import (
    CANARY,
    CANARY_SERVICE,
    CHILDREN,
    DEPLOYMENT,
    GATEWAY_CHILDREN,
    HPA,
    ROUTE,
    ChildKind,
    Context,
    Object,
    controlled_by,
)
from kubeclassify_operator.images import ServerImages, configured
from kubeclassify_operator.kube import CLASSIFIERS, PODS, Kind, Kube
from kubeclassify_operator.names import EventReason, Reason, Track, selector_labels
from kubeclassify_operator.spec import ImageClassifierSpec, InvalidSpec, check_name, parse_spec

EventPoster = Callable[[str, str, str], None]
"""post(type, reason, message): an Event on the ImageClassifier."""

# Failures worth a Warning event when Ready turns False for them.
_WARNING_REASONS = {
    Reason.INVALID_SPEC,
    Reason.CRASH_LOOP_BACK_OFF,
    Reason.IMAGE_PULL_BACK_OFF,
    Reason.OOM_KILLED,
    Reason.PROGRESS_DEADLINE_EXCEEDED,
    Reason.UNSCHEDULABLE,
    Reason.MODEL_DOWNLOAD_FAILED,
    Reason.MODEL_LOAD_FAILED,
    Reason.CHILD_CONFLICT,
}


def utcnow() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def reconcile(
    kube: Kube,
    body: dict[str, Any],
    post: EventPoster,
    hpa_may_exist: bool = True,
    images: ServerImages | None = None,
) -> dict[str, Any]:
    """Create-or-patch the children of one ImageClassifier, write its status and return it.

    `images`: the server images to choose from; None: those the operator was started with.
    `hpa_may_exist`: False when the caller knows there is no HorizontalPodAutoscaler of this
    classifier (its watch saw none): an optional child the spec does not want (the HPA, with
    autoscaling off) is then not looked for.
    """
    owner = Owner.from_body(body)
    previous: dict[str, Any] = dict(body.get("status") or {})
    generation = body["metadata"].get("generation")
    news = None  # spec.replicas newly ignored (autoscaling): worth an Event
    now = utcnow()
    told: list[tuple[str, str, str]] = []  # the canary's Events
    try:
        check_name(owner.name)  # before any child: a name one child refuses leaves half
        spec = parse_spec(dict(body.get("spec") or {}))
        applied = _apply_children(
            kube, owner, spec, previous, post, hpa_may_exist, images or configured(), now
        )
    except InvalidSpec as exc:
        new = status.invalid_status(
            previous=previous, message=str(exc), generation=generation, now=now
        )
    else:
        observed = status.Observed(applied.children, applied.pods)
        mine = observed.own(owner.uid)
        state = applied.canary if mine[CANARY] is not None else None
        tracks, shown = canary.tracks(
            spec,
            state,
            mine[DEPLOYMENT],
            mine[CANARY],
            mine.track_pods(Track.STABLE),
            mine.track_pods(Track.CANARY),
            owner.name,
            route=mine[ROUTE],
        )
        new = status.compute_status(
            name=owner.name,
            uid=owner.uid,
            spec=spec,
            observed=observed,
            previous=previous,
            generation=generation,
            now=now,
            tracks=tracks,
            canary=shown,
        )
        news = status.replicas_news(spec, previous)
        told = canary.events(previous.get("canary"), shown)
    if new != previous:
        # Events first: whoever sees the new status finds its Event already there (a status
        # write that fails and is retried may announce twice, never zero times).
        _announce_readiness(status.ready_condition(previous), status.ready_condition(new), post)
        if news:
            post("Warning", EventReason.REPLICAS_IGNORED, news)
        for event in told:
            post(*event)
        patch = builders.merge_patch(previous, new)
        kube.patch(CLASSIFIERS, owner.namespace, owner.name, {"status": patch}, sub="status")
    return new


@dataclass(frozen=True)
class _Applied:
    """What a pass found and made: the children the spec wants as they now stand, by key (a
    stranger's included), the classifier's pods as listed before any write, and the canary's
    state as assessed from them."""

    children: dict[str, Object]
    pods: list[dict[str, Any]]
    canary: status.CanaryStatus | None


def _apply_children(
    kube: Kube,
    owner: Owner,
    spec: ImageClassifierSpec,
    previous: dict[str, Any],
    post: EventPoster,
    hpa_may_exist: bool,
    images: ServerImages,
    now: str,
) -> _Applied:
    """Read the children, decide the split, then create-or-patch each child this classifier
    controls, in the registry's order, and delete the ones the spec no longer wants, in the
    reverse order; a same-name stranger is skipped. A kind the API server lacks (`requires`)
    is refused once the rest is done.

    Not looked for: an HPA the caller knows is not there (`hpa_may_exist`) and the spec does
    not want, a canary Deployment when there is no spec.canary and the status names none, and
    Gateway mode's children when there is no spec.gateway and the status names no Gateway.
    """
    maybe_canary = spec.canary is not None or "canary" in previous
    # Gateway mode's are made only with spec.gateway, and the status names the route's Gateway
    # while there is one: no reads for the classifiers without.
    maybe_gateway = spec.gateway is not None or "gateway" in previous
    maybe = {
        HPA.key: hpa_may_exist or spec.autoscaling is not None,
        CANARY.key: maybe_canary,
        **dict.fromkeys((child.key for child in GATEWAY_CHILDREN), maybe_gateway),
        CANARY_SERVICE.key: maybe_gateway and maybe_canary,
    }
    found = {
        child.key: kube.get(child.api, owner.namespace, child.name(owner.name))
        for child in CHILDREN
        if maybe.get(child.key, True)
    }
    # No Deployment yet, no pods yet: their events start the next pass.
    any_deployment = found.get(DEPLOYMENT.key) or found.get(CANARY.key)
    pods = kube.list(PODS, owner.namespace, selector_labels(owner.name)) if any_deployment else []
    seen = status.Observed(found, pods).own(owner.uid)
    canary_pods = seen.track_pods(Track.CANARY)
    state = canary.assess(spec, seen[CANARY], canary_pods, previous.get("canary"), now)
    split = canary.split(spec, state, seen[DEPLOYMENT], seen[CANARY], canary_pods)
    context = Context(images, split)
    children: dict[str, Object] = {}
    served: dict[Kind, bool] = {}  # discovery's answers, asked once a pass
    doomed: list[ChildKind] = []  # the ones to delete, once the others are applied
    refusal: str | None = None  # a kind the API server lacks
    for child in CHILDREN:
        if child.key not in found:
            continue
        current = found[child.key]
        if child is CANARY and split.keep_canary:
            stable = children.get(DEPLOYMENT.key)
            desired_stable = DEPLOYMENT.build(owner, spec, found[DEPLOYMENT.key], context)
            if desired_stable and canary.stable_settled(desired_stable, stable):
                context = replace(context, split=replace(split, keep_canary=False))
        wanted = child.optional is None or child.optional[0](spec, context)
        if wanted and current is None and child.requires:
            kind, missing = child.requires
            if not served.setdefault(kind, kube.serves(kind)):
                refusal = refusal or missing  # e.g. no Gateway API: said in the status, once
                continue
        desired = child.build(owner, spec, current, context) if wanted else None
        if desired is None:
            if child.optional and current is not None and controlled_by(current, owner.uid):
                doomed.append(child)
            continue
        target = children.get(child.acts_on) if child.acts_on else None
        if child.acts_on and not (target is not None and controlled_by(target, owner.uid)):
            children[child.key] = current  # never act on someone else's child
            continue
        children[child.key] = _apply(kube, child, spec, desired, current, owner, post)
    # In the reverse order: a child is gone only once none applied after it refers to it (the
    # route is patched off the canary's Service, or deleted, before that Service is).
    for child in reversed(doomed):
        assert child.optional is not None  # only an optional child is ever deleted
        name = child.name(owner.name)
        kube.delete(child.api, owner.namespace, name)
        note = child.optional[1]
        post("Normal", EventReason.DELETED, f"Deleted {child.kind} {name} ({note})")
    if refusal is not None:
        raise InvalidSpec(refusal)  # after the rest is made: the classifier serves on
    return _Applied(children, pods, state)


def _apply(
    kube: Kube,
    child: ChildKind,
    spec: ImageClassifierSpec,
    desired: dict[str, Any],
    current: Object,
    owner: Owner,
    post: EventPoster,
) -> Object:
    """Create the child if missing, patch it if it drifted, leave it alone otherwise; the
    child as it now stands.

    A `current` that is not this classifier's child is returned as found, with no write.
    A 409 on create (someone created it meanwhile) propagates: the retried pass re-reads it.
    """
    if current is not None and not controlled_by(current, owner.uid):
        return current
    desired = builders.with_last_applied(desired)
    meta = desired["metadata"]
    what = f"{child.kind} {meta['name']}"
    try:
        if current is None:
            current = kube.create(child.api, meta["namespace"], desired)
            post("Normal", EventReason.CREATED, f"Created {what}")
        elif not builders.is_subset(desired, current):
            patch = builders.merge_patch(builders.last_applied(current), desired)
            current = kube.patch(child.api, meta["namespace"], meta["name"], patch)
            post("Normal", EventReason.UPDATED, f"Updated {what} to match the spec")
    except ApiException as exc:
        if exc.status in (400, 422):  # e.g. an affinity the API server refuses
            reason = rejections.describe_rejection(child.kind, meta["name"], exc.body, spec)
            raise InvalidSpec(reason) from exc
        raise
    return current


def _announce_readiness(
    before: dict[str, Any] | None, after: dict[str, Any] | None, post: EventPoster
) -> None:
    """An Event whenever readiness or its reason changes (never for a no-op pass)."""
    if after is None:
        return
    unchanged = before and before.get("status") == after["status"]
    if unchanged and before and before.get("reason") == after["reason"]:
        return
    if after["status"] == "True":
        post("Normal", EventReason.READY, after["message"])
    elif after["reason"] in _WARNING_REASONS:
        post("Warning", after["reason"], after["message"])
    else:
        post("Normal", after["reason"], after["message"])
