"""kopf glue: every trigger runs the same level-based `reconcile` for the affected classifier."""

import asyncio
import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import kopf
import urllib3
from kubernetes.client.exceptions import ApiException

from kubeclassify_operator import status
from kubeclassify_operator.children import WATCHED
from kubeclassify_operator.kube import (
    CLASSIFIERS,
    EVENTS,
    HPAS,
    USER_AGENT,
    Kube,
    ObjectKey,
    RecordingKube,
    describe,
    load_config,
    namespace_terminating,
)
from kubeclassify_operator.names import INSTANCE_LABEL, MANAGED
from kubeclassify_operator.reconcile import EventPoster, reconcile, utcnow
from kubeclassify_operator.spec import GROUP, PLURAL, VERSION

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
# A child's change starts a pass this much later, and every change of the classifier's
# children meanwhile joins it: the Deployment controller, the ReplicaSet's new pod and the
# scheduler each write within a second or two of each other, and one pass reads them all.
COALESCE_SECONDS = 2.0
# Shutdown must fit the Deployment's 30 s grace period even with the API server gone: kopf's
# own requests are bounded, and kopf is killed if its stop takes longer than this.
KOPF_CONNECT_TIMEOUT = 5.0
KOPF_REQUEST_TIMEOUT = 30.0
KOPF_EXIT_TIMEOUT = 15.0

logger = logging.getLogger(__name__)

# One pass at a time per classifier, each on a fresh read: kopf runs the classifier's and its
# children's handlers concurrently, and a pass working from a stale status would undo another's.
_locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
# The resourceVersion of each child as the latest pass read or wrote it: its watch event (the
# echo of our own write, a change a pass already read, a re-list after a watch reconnects)
# then starts no pass.
_seen_versions: dict[ObjectKey, str] = {}
_CHILDREN = {kind.plural for kind in WATCHED}
# The HorizontalPodAutoscalers of ours that exist, by (namespace, name) as their watch and our
# passes tell: with autoscaling off, a pass looks for a leftover one only when there is one.
_hpas: set[tuple[str, str]] = set()
# Classifiers with a recheck pending (see _recheck_later).
_rechecks: set[tuple[str, str]] = set()
_rechecks_lock = threading.Lock()
# Classifiers with a coalesced pass pending, and the child versions that asked for it.
_pending: dict[tuple[str, str], dict[ObjectKey, str | None]] = {}
# Set when the operator stops: retry pauses end at once and no new pass starts.
_stopping = threading.Event()


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Keep kopf's bookkeeping in our own annotations: the status belongs to the CRD schema."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.networking.connect_timeout = KOPF_CONNECT_TIMEOUT
    settings.networking.request_timeout = KOPF_REQUEST_TIMEOUT
    settings.process.ultimate_exiting_timeout = KOPF_EXIT_TIMEOUT
    memo["kube"] = Kube(load_config())
    # Where conflict rechecks are queued and run: kopf's loop and kopf's handler threads.
    memo["loop"] = asyncio.get_running_loop()
    memo["executor"] = settings.execution.executor


@kopf.on.cleanup()
async def stopping(**_: Any) -> None:
    """kopf has stopped (however it was told): no pass starts any more."""
    stop_passes()


def _poster(kube: Kube, body: dict[str, Any]) -> EventPoster:
    """Events go on the classifier, where `kubectl describe ic` shows them.

    Posted with our own client, at once and from any thread (kopf.event needs kopf's context
    and retries a refused Event for a minute). One attempt: a pass re-run after a failure
    would find nothing new to announce, so a lost Event is logged instead.
    """
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    involved = {
        "apiVersion": body["apiVersion"],
        "kind": body["kind"],
        "name": name,
        "namespace": namespace,
        "uid": meta["uid"],
    }

    def post(type_: str, reason: str, message: str) -> None:
        now = utcnow()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{name}.", "namespace": namespace},
            "involvedObject": involved,
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "source": {"component": USER_AGENT},
            "reportingComponent": USER_AGENT,
        }
        try:
            kube.create(EVENTS, namespace, event)
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            if not namespace_terminating(exc):
                logger.warning(
                    "%s Event %s not posted: %s", ref(namespace, name), reason, describe(exc)
                )

    return post


@kopf.on.resume(GROUP, VERSION, PLURAL, backoff=RETRY_SECONDS)
@kopf.on.create(GROUP, VERSION, PLURAL, backoff=RETRY_SECONDS)
@kopf.on.update(GROUP, VERSION, PLURAL, backoff=RETRY_SECONDS)
def classifier_changed(name: str, namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    """The classifier was created, edited, or found at startup (kopf retries a failure)."""
    if namespace:  # always set: the resource is namespaced
        _reconcile_fresh(memo, namespace, name)


def child_changed(
    body: kopf.Body, type: str | None, resource: kopf.Resource, memo: kopf.Memo, **_: Any
) -> None:
    """A child was edited, deleted or changed state: restore it and refresh the status soon
    (one pass for the burst of changes a rollout or the scheduler makes)."""
    name = body.metadata.labels.get(INSTANCE_LABEL)
    namespace = body.metadata.namespace
    if not (name and namespace):
        return
    child = (resource.plural, namespace, body.metadata.name or "")
    version = None if type == "DELETED" else body.metadata.get("resourceVersion")
    if resource.plural == HPAS.plural:
        (_hpas.add if version else _hpas.discard)((namespace, child[2]))
    if version is None:
        _seen_versions.pop(child, None)
    elif _seen_versions.get(child) == version:
        return  # a pass read or wrote this very version already
    _pass_soon(
        memo, namespace, name, child, version, f"{resource.kind} {child[2]} {type or 'listed'}"
    )


for _kind in WATCHED:
    kopf.on.event(_kind.group, _kind.version, _kind.plural, labels=MANAGED)(child_changed)


def ref(namespace: str, name: str) -> str:
    """How log lines name a classifier (kopf's own prefix for the objects it logs about)."""
    return f"[{namespace}/{name}]"


def _pass_logged(memo: kopf.Memo, namespace: str, name: str, why: str) -> bool:
    """A pass that kopf will not retry: its failure is logged here, naming the classifier
    (kopf would name the child whose event started it); the next event or recheck retries."""
    try:
        _reconcile_fresh(memo, namespace, name)
    except (ApiException, urllib3.exceptions.HTTPError) as exc:
        logger.error("%s Pass after %s failed: %s", ref(namespace, name), why, describe(exc))
        return False
    except Exception:
        logger.exception("%s Pass after %s failed", ref(namespace, name), why)
        return False
    return True


def _reconcile_fresh(memo: kopf.Memo, namespace: str, name: str) -> None:
    if not _stopping.is_set():
        with _locks[namespace, name]:
            _retried_pass(memo, namespace, name)


def _pass_soon(
    memo: kopf.Memo,
    namespace: str,
    name: str,
    child: ObjectKey,
    version: str | None,
    why: str,
) -> None:
    """A pass in COALESCE_SECONDS, joined by every child change until it starts. It is
    skipped if, by then, a pass has read each version that asked for it."""
    key = namespace, name
    with _rechecks_lock:
        if key in _pending:
            _pending[key][child] = version
            return
        _pending[key] = {child: version}

    def run() -> None:
        with _rechecks_lock:
            asked = _pending.pop(key)
        if any(v is None or _seen_versions.get(c) != v for c, v in asked.items()):
            _pass_logged(memo, namespace, name, why)

    _later(memo, COALESCE_SECONDS, run)


def _later(memo: kopf.Memo, delay: float, run: Callable[[], None]) -> None:
    """Run `run` in kopf's handler threads after `delay` seconds, from any thread.

    Queued in kopf's event loop, so it ends with the operator (no thread of its own outlives
    it). Not a kopf timer: those put a finalizer on the classifier, and deletion must never
    wait for the operator.
    """
    loop: asyncio.AbstractEventLoop = memo["loop"]

    def start() -> None:
        loop.run_in_executor(memo["executor"], run)

    loop.call_soon_threadsafe(loop.call_later, delay, start)


def _remember(versions: dict[ObjectKey, str | None]) -> None:
    """What a pass read or wrote of the children (not of the classifier, nor its Events)."""
    for (plural, namespace, name), version in versions.items():
        if plural not in _CHILDREN:
            continue
        if plural == HPAS.plural:
            (_hpas.add if version else _hpas.discard)((namespace, name))
        if version:
            _seen_versions[plural, namespace, name] = version
        else:
            _seen_versions.pop((plural, namespace, name), None)


def _retried_pass(memo: kopf.Memo, namespace: str, name: str) -> None:
    shared: Kube = memo["kube"]
    for attempt, pause in enumerate((*PASS_BACKOFFS, None), start=1):
        kube = RecordingKube(shared.api)
        try:
            owner = kube.get(CLASSIFIERS, namespace, name)
            if owner is None or owner["metadata"].get("deletionTimestamp"):
                return  # the classifier is gone; garbage collection removes the rest
            post = _poster(shared, owner)
            new = reconcile(kube, owner, post, hpa_may_exist=(namespace, name) in _hpas)
            _remember(kube.versions)
            _log_outcome(namespace, name, owner.get("status") or {}, new)
            if status.in_conflict(new):
                _recheck_later(memo, namespace, name)
            return
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            if namespace_terminating(exc):
                logger.debug("%s Namespace being deleted: nothing to do", ref(namespace, name))
                return
            delay = retry_delay(exc, pause)
            if delay is None or _stopping.is_set():
                raise
            logger.warning(
                "%s Pass %d failed (%s); retrying in %.1fs",
                ref(namespace, name),
                attempt,
                describe(exc),
                delay,
            )
            if _stopping.wait(delay):
                return  # the operator is stopping; the next leader's first pass redoes it


def _log_outcome(namespace: str, name: str, before: dict[str, Any], after: dict[str, Any]) -> None:
    """A rejected spec is a warning, once per rejection; routine passes are debug."""
    ready = status.ready_condition(after) or {}
    if ready.get("reason") == "InvalidSpec" and ready != status.ready_condition(before):
        logger.warning("%s Spec rejected: %s", ref(namespace, name), ready.get("message"))
    else:
        logger.debug("%s Reconciled: %s", ref(namespace, name), ready.get("reason"))


def stop_passes() -> None:
    """Start no new pass, and end the retry pauses of those in flight at once."""
    _stopping.set()


def _recheck_later(memo: kopf.Memo, namespace: str, name: str) -> None:
    """Run one more pass in a while (one pending recheck per classifier at most)."""
    with _rechecks_lock:
        if (namespace, name) in _rechecks:
            return
        _rechecks.add((namespace, name))

    def run() -> None:
        with _rechecks_lock:
            _rechecks.discard((namespace, name))
        _pass_logged(memo, namespace, name, "a recheck of a conflict")

    _later(memo, CONFLICT_RECHECK_SECONDS, run)


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
