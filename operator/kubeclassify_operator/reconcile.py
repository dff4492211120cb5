"""One level-based pass: bring the children to the desired state, then report the status.

Every step compares first and writes only on a difference, so running it again changes
nothing; that is what lets any event (the classifier's or a child's) simply re-run it, and
what makes it safe to retry a pass that an API error cut short.

A same-name object that this classifier does not control is never written: the pass skips
it and reports Ready=False/ChildConflict until it is gone.
"""

import datetime
from collections.abc import Callable
from typing import Any

from kubernetes.client.exceptions import ApiException

from kubeclassify_operator import builders, rejections, status
from kubeclassify_operator.builders import Owner
from kubeclassify_operator.children import CHILDREN, DEPLOYMENT, ChildKind, Object, controlled_by
from kubeclassify_operator.images import ServerImages, configured
from kubeclassify_operator.kube import CLASSIFIERS, PODS, Kube
from kubeclassify_operator.names import EventReason, Reason, selector_labels
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
    try:
        check_name(owner.name)  # before any child: a name one child refuses leaves half
        spec = parse_spec(dict(body.get("spec") or {}))
        children, created = _apply_children(
            kube, owner, spec, post, hpa_may_exist, images or configured()
        )
    except InvalidSpec as exc:
        new = status.invalid_status(
            previous=previous, message=str(exc), generation=generation, now=utcnow()
        )
    else:
        observed = status.Observed(
            children,
            # A Deployment made just now has no pods yet: their events start the next pass.
            pods=[]
            if DEPLOYMENT.kind in created
            else kube.list(PODS, owner.namespace, selector_labels(owner.name)),
        )
        new = status.compute_status(
            name=owner.name,
            uid=owner.uid,
            spec=spec,
            observed=observed,
            previous=previous,
            generation=generation,
            now=utcnow(),
        )
        news = status.replicas_news(spec, previous)
    if new != previous:
        # Events first: whoever sees the new status finds its Event already there (a status
        # write that fails and is retried may announce twice, never zero times).
        _announce_readiness(status.ready_condition(previous), status.ready_condition(new), post)
        if news:
            post("Warning", EventReason.REPLICAS_IGNORED, news)
        patch = builders.merge_patch(previous, new)
        kube.patch(CLASSIFIERS, owner.namespace, owner.name, {"status": patch}, sub="status")
    return new


def _apply_children(
    kube: Kube,
    owner: Owner,
    spec: ImageClassifierSpec,
    post: EventPoster,
    hpa_may_exist: bool,
    images: ServerImages,
) -> tuple[dict[str, Object], set[str]]:
    """Create-or-patch each child this classifier controls; a same-name stranger is skipped.

    Returns the children the spec wants as they now stand, by kind, for the status to read
    (a stranger's included), and the kinds this pass created."""
    children: dict[str, Object] = {}
    created: set[str] = set()
    for child in CHILDREN:
        wanted = child.optional is None or child.optional[0](spec)
        if not (wanted or hpa_may_exist):
            continue
        current = kube.get(child.api, owner.namespace, owner.name)
        desired = child.build(owner, spec, current, images) if wanted else None
        if desired is None:
            if child.optional and current is not None and controlled_by(current, owner.uid):
                kube.delete(child.api, owner.namespace, owner.name)
                note = child.optional[1]
                post("Normal", EventReason.DELETED, f"Deleted {child.kind} {owner.name} ({note})")
            continue
        target = children.get(child.acts_on) if child.acts_on else None
        if child.acts_on and not (target is not None and controlled_by(target, owner.uid)):
            children[child.kind] = current  # never act on someone else's child
            continue
        children[child.kind] = _apply(kube, child, spec, desired, current, owner, post)
        if current is None:
            created.add(child.kind)
    return children, created


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
