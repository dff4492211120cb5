"""kopf glue: every trigger runs the same level-based `reconcile` for the affected classifier."""

import logging
import threading
import time
from collections import defaultdict
from typing import Any, cast

import kopf
import urllib3
from kubernetes.client.exceptions import ApiException

from kubeclassify_operator import status
from kubeclassify_operator.builders import MANAGER
from kubeclassify_operator.kube import CLASSIFIERS, Kube, load_config
from kubeclassify_operator.reconcile import EventPoster, reconcile
from kubeclassify_operator.spec import GROUP, PLURAL, VERSION

MANAGED = {"app.kubernetes.io/managed-by": MANAGER}
INSTANCE_LABEL = "app.kubernetes.io/instance"
RETRY_SECONDS = 10
# A pass cut short by a transient API error is re-run on a fresh read after these pauses
# (about 30 s in all): event handlers get no retries from kopf, so a lost pass would otherwise
# wait for the next event. 409 is transient too: a re-read resolves the race.
PASS_BACKOFFS = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0)
TRANSIENT_STATUSES = {409, 429, 500, 502, 503, 504}
MAX_RETRY_AFTER = 60.0
# While a same-name stranger blocks a child, look again this often (it may carry none of our
# labels, so its deletion triggers no event here).
CONFLICT_RECHECK_SECONDS = 5.0

logger = logging.getLogger(__name__)

# One pass at a time per classifier, each on a fresh read: kopf runs the classifier's and its
# children's handlers concurrently, and a pass working from a stale status would undo another's.
_locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
# The resourceVersion of each child as last reconciled, by (plural, namespace, name): a watch
# that reconnects re-lists every child, and a pass per unchanged child would cost one full pass
# per child (and per pod) on every reconnect.
_handled_versions: dict[tuple[str, str, str], str] = {}
# Classifiers with a recheck pending (see _recheck_later).
_rechecks: set[tuple[str, str]] = set()
_rechecks_lock = threading.Lock()


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
def child_changed(
    body: kopf.Body, type: str | None, resource: kopf.Resource, memo: kopf.Memo, **_: Any
) -> None:
    """A child was edited, deleted or changed state: restore it and refresh the status now."""
    name = body.metadata.labels.get(INSTANCE_LABEL)
    namespace = body.metadata.namespace
    if not (name and namespace):
        return
    child = (resource.plural, namespace, body.metadata.name or "")
    version = body.metadata.get("resourceVersion")
    if type != "DELETED" and version and _handled_versions.get(child) == version:
        return  # this very version was reconciled already: a re-list after a watch reconnect
    _reconcile_fresh(memo["kube"], namespace, name)
    if type == "DELETED":
        _handled_versions.pop(child, None)
    elif version:
        _handled_versions[child] = version


def _reconcile_fresh(kube: Kube, namespace: str, name: str) -> None:
    with _locks[namespace, name]:
        for attempt, pause in enumerate((*PASS_BACKOFFS, None), start=1):
            try:
                owner = kube.get(CLASSIFIERS, namespace, name)
                if owner is None or owner["metadata"].get("deletionTimestamp"):
                    return  # the classifier is gone; garbage collection removes the rest
                new = reconcile(kube, owner, _poster(owner))
                if status.in_conflict(new):
                    _recheck_later(kube, namespace, name)
                return
            except (ApiException, urllib3.exceptions.HTTPError) as exc:
                delay = retry_delay(exc, pause)
                if delay is None:
                    raise
                logger.warning(
                    "Pass %d for %s/%s failed (%s); retrying in %.1fs",
                    attempt,
                    namespace,
                    name,
                    _describe(exc),
                    delay,
                )
                time.sleep(delay)


def _recheck_later(kube: Kube, namespace: str, name: str) -> None:
    """Run one more pass in a while (one pending recheck per classifier at most).

    Not a kopf timer: those put a finalizer on the classifier, and deletion must never wait
    for the operator.
    """
    with _rechecks_lock:
        if (namespace, name) in _rechecks:
            return
        _rechecks.add((namespace, name))
    timer = threading.Timer(CONFLICT_RECHECK_SECONDS, _recheck, (kube, namespace, name))
    timer.daemon = True
    timer.start()


def _recheck(kube: Kube, namespace: str, name: str) -> None:
    with _rechecks_lock:
        _rechecks.discard((namespace, name))
    try:
        _reconcile_fresh(kube, namespace, name)
    except Exception:  # a thread of our own: nobody else would log it; the next event retries
        logger.exception("Recheck of %s/%s failed", namespace, name)


def retry_delay(exc: Exception, pause: float | None) -> float | None:
    """How long to wait before re-running a failed pass, or None to give up.

    Transient failures (timeouts, dropped connections, 409/429/5xx) are retried after `pause`,
    or after the server's Retry-After when that is longer; anything else is a real error.
    """
    if pause is None:
        return None
    if isinstance(exc, urllib3.exceptions.HTTPError):
        return pause
    if not isinstance(exc, ApiException) or exc.status not in TRANSIENT_STATUSES:
        return None
    retry_after = (exc.headers or {}).get("Retry-After", "")
    if retry_after.isdigit():
        return max(pause, min(float(retry_after), MAX_RETRY_AFTER))
    return pause


def _describe(exc: Exception) -> str:
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    return repr(exc)
