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
from kubeclassify_operator.images import ServerImages, configured
from kubeclassify_operator.kube import CLASSIFIERS, DEPLOYMENTS, HPAS, PODS, SERVICES, Kind, Kube
from kubeclassify_operator.spec import ImageClassifierSpec, InvalidSpec, check_name, parse_spec

EventPoster = Callable[[str, str, str], None]
"""post(type, reason, message): an Event on the ImageClassifier."""

# Failures worth a Warning event when Ready turns False for them.
_WARNING_REASONS = {
    "InvalidSpec",
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "OOMKilled",
    "ProgressDeadlineExceeded",
    "Unschedulable",
    status.MODEL_DOWNLOAD_FAILED,
    status.MODEL_LOAD_FAILED,
    status.CHILD_CONFLICT,
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
    classifier (its watch saw none): with autoscaling off, the pass then does not look.
    """
    owner = Owner.from_body(body)
    previous: dict[str, Any] = dict(body.get("status") or {})
    generation = body["metadata"].get("generation")
    news = None  # spec.replicas newly ignored (autoscaling): worth an Event
    try:
        check_name(owner.name)  # before any child: a name one child refuses leaves half
        spec = parse_spec(dict(body.get("spec") or {}))
        deployment, service, hpa, created = _apply_children(
            kube, owner, spec, post, hpa_may_exist, images or configured()
        )
    except InvalidSpec as exc:
        new = status.invalid_status(
            previous=previous, message=str(exc), generation=generation, now=utcnow()
        )
    else:
        observed = status.Observed(
            deployment=deployment,
            service=service,
            # A Deployment made just now has no pods yet: their events start the next pass.
            pods=[]
            if created
            else kube.list(PODS, owner.namespace, builders.selector_labels(owner.name)),
            hpa=hpa if spec.autoscaling else None,
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
            post("Warning", "ReplicasIgnored", news)
        patch = builders.merge_patch(previous, new)
        kube.patch(CLASSIFIERS, owner.namespace, owner.name, {"status": patch}, sub="status")
    return new


Child = dict[str, Any] | None


def _apply_children(
    kube: Kube,
    owner: Owner,
    spec: ImageClassifierSpec,
    post: EventPoster,
    hpa_may_exist: bool,
    images: ServerImages,
) -> tuple[Child, Child, Child, bool]:
    """Create-or-patch each child this classifier controls; a same-name stranger is skipped.

    Returns the Deployment, Service and HPA as they now stand, for the status to read, and
    whether the Deployment was created by this pass."""
    current = kube.get(DEPLOYMENTS, owner.namespace, owner.name)
    created = current is None
    replicas = current.get("spec", {}).get("replicas") if current else None
    built = builders.build_deployment(owner, spec, replicas, images)
    desired = builders.keep_template_hash(built, current)
    deployment = _apply(kube, DEPLOYMENTS, desired, current, owner, post)
    current = kube.get(SERVICES, owner.namespace, owner.name)
    service = _apply(kube, SERVICES, builders.build_service(owner, spec), current, owner, post)
    desired_hpa = builders.build_hpa(owner, spec)
    look = desired_hpa is not None or hpa_may_exist
    hpa = current = kube.get(HPAS, owner.namespace, owner.name) if look else None
    deployment_ours = deployment is not None and status.controlled_by(deployment, owner.uid)
    if desired_hpa is not None and deployment_ours:  # never autoscale someone else's Deployment
        hpa = _apply(kube, HPAS, desired_hpa, current, owner, post)
    elif desired_hpa is None and current is not None and status.controlled_by(current, owner.uid):
        kube.delete(HPAS, owner.namespace, owner.name)
        post("Normal", "Deleted", f"Deleted HorizontalPodAutoscaler {owner.name} (autoscaling off)")
        hpa = None
    return deployment, service, hpa, created


def _apply(
    kube: Kube,
    kind: Kind,
    desired: dict[str, Any],
    current: Child,
    owner: Owner,
    post: EventPoster,
) -> Child:
    """Create the child if missing, patch it if it drifted, leave it alone otherwise; the
    child as it now stands.

    A `current` that is not this classifier's child is returned as found, with no write.
    A 409 on create (someone created it meanwhile) propagates: the retried pass re-reads it.
    """
    if current is not None and not status.controlled_by(current, owner.uid):
        return current
    desired = builders.with_last_applied(desired)
    meta = desired["metadata"]
    what = f"{desired['kind']} {meta['name']}"
    try:
        if current is None:
            current = kube.create(kind, meta["namespace"], desired)
            post("Normal", "Created", f"Created {what}")
        elif not builders.is_subset(desired, current):
            patch = builders.merge_patch(builders.last_applied(current), desired)
            current = kube.patch(kind, meta["namespace"], meta["name"], patch)
            post("Normal", "Updated", f"Updated {what} to match the spec")
    except ApiException as exc:
        if exc.status in (400, 422):  # e.g. an affinity the API server refuses
            reason = rejections.describe_rejection(desired["kind"], meta["name"], exc.body)
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
        post("Normal", "Ready", after["message"])
    elif after["reason"] in _WARNING_REASONS:
        post("Warning", after["reason"], after["message"])
    else:
        post("Normal", after["reason"], after["message"])
