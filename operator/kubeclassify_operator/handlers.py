"""kopf glue: every trigger runs the same level-based `reconcile` for the affected classifier."""

import threading
from collections import defaultdict
from typing import Any, cast

import kopf
from kubernetes.client.exceptions import ApiException

from kubeclassify_operator.builders import MANAGER
from kubeclassify_operator.kube import CLASSIFIERS, Kube, load_config
from kubeclassify_operator.reconcile import EventPoster, reconcile
from kubeclassify_operator.spec import GROUP, PLURAL, VERSION

MANAGED = {"app.kubernetes.io/managed-by": MANAGER}
INSTANCE_LABEL = "app.kubernetes.io/instance"
RETRY_SECONDS = 10

# One pass at a time per classifier, each on a fresh read: kopf runs the classifier's and its
# children's handlers concurrently, and a pass working from a stale status would undo another's.
_locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Keep kopf's bookkeeping in our own annotations: the status belongs to the CRD schema."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    kube = Kube(load_config())
    memo["kube"] = kube
    if not settings.peering.standalone:
        ensure_peering(kube, settings.peering.name, memo.get("namespaces", []))


def ensure_peering(kube: Kube, name: str, namespaces: list[str]) -> None:
    """Create the peering object(s) replicas meet in, so `kubectl apply -k` needs one pass.

    (A custom resource cannot be applied in the same pass as its CRD.)
    """
    if namespaces:
        targets = [
            (f"/apis/kopf.dev/v1/namespaces/{ns}/kopfpeerings", "KopfPeering") for ns in namespaces
        ]
    else:
        targets = [("/apis/kopf.dev/v1/clusterkopfpeerings", "ClusterKopfPeering")]
    for path, kind in targets:
        body = {"apiVersion": "kopf.dev/v1", "kind": kind, "metadata": {"name": name}}
        try:
            kube.request("POST", path, body)
        except ApiException as exc:
            if exc.status != 409:  # 409: it exists already, which is all we need
                raise


def _poster(body: dict[str, Any]) -> EventPoster:
    """Events go on the classifier, where `kubectl describe ic` shows them."""

    def post(type_: str, reason: str, message: str) -> None:
        kopf.event(
            kopf.Body(cast(kopf.RawBody, body)), type=type_, reason=reason, message=message[:1024]
        )

    return post


@kopf.on.resume(GROUP, VERSION, PLURAL, backoff=RETRY_SECONDS)
@kopf.on.create(GROUP, VERSION, PLURAL, backoff=RETRY_SECONDS)
@kopf.on.update(GROUP, VERSION, PLURAL, backoff=RETRY_SECONDS)
def classifier_changed(name: str, namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    """The classifier was created, edited, or found at startup."""
    if namespace:  # always set: the resource is namespaced
        _reconcile_fresh(memo["kube"], namespace, name)


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
@kopf.on.event("", "v1", "services", labels=MANAGED)
@kopf.on.event("autoscaling", "v2", "horizontalpodautoscalers", labels=MANAGED)
@kopf.on.event("", "v1", "pods", labels=MANAGED)
def child_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A child was edited, deleted or changed state: restore it and refresh the status now."""
    name = body.metadata.labels.get(INSTANCE_LABEL)
    namespace = body.metadata.namespace
    if name and namespace:
        _reconcile_fresh(memo["kube"], namespace, name)


def _reconcile_fresh(kube: Kube, namespace: str, name: str) -> None:
    with _locks[namespace, name]:
        owner = kube.get(CLASSIFIERS, namespace, name)
        if owner is None or owner["metadata"].get("deletionTimestamp"):
            return  # the classifier is gone; garbage collection removes the rest
        reconcile(kube, owner, _poster(owner))
