"""kopf glue: every trigger asks the pass queue (passes.py) for the same level-based
`reconcile` of the affected classifier.

The handlers are registered on a registry of their own (`registry()`), handed to kopf by the
command line: importing this module registers nothing.
"""

import asyncio
import copy
import functools
import logging
from collections.abc import Mapping
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
    PODS,
    USER_AGENT,
    CachedKube,
    Kind,
    Kube,
    ObjectKey,
    describe,
    load_config,
    namespace_terminating,
)
from kubeclassify_operator.names import INSTANCE_LABEL, MANAGED
from kubeclassify_operator.passes import Done, Key, PassQueue
from kubeclassify_operator.reconcile import EventPoster, reconcile, utcnow
from kubeclassify_operator.spec import GROUP, PLURAL, VERSION

# A failed pass is retried after these pauses at first (about 30 s in all; the server's
# Retry-After when longer), then every RETRY_SECONDS, as kopf retried a failed handler: the
# queue is the only retry layer (kopf never sees a handler fail). 409 is transient too: a
# re-read resolves the race.
PASS_BACKOFFS = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0)
RETRY_SECONDS = 10
TRANSIENT_STATUSES = {409, 429, 500, 502, 503, 504}
MAX_RETRY_AFTER = 60.0
# Retries of all classifiers together start at most this often (a token bucket): an API
# server answering 429 or 5xx to everyone gets a trickle, not a storm.
RETRY_RATE = 5.0
RETRY_BURST = 20
# Passes run at once (kopf's executor is sized to match): each mostly waits on the API server.
PASS_WORKERS = 8
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
# A pass takes its copies of the children from kopf's event loop: bounded, should the loop
# be stuck (it never is for long: the copies are a few dict lookups away).
SNAPSHOT_TIMEOUT = 30.0

logger = logging.getLogger(__name__)

_CHILDREN = {kind.plural for kind in WATCHED}


def registry() -> kopf.OperatorRegistry:
    """The operator's handlers, for `kopf.operator(registry=...)`."""
    handlers = kopf.OperatorRegistry()
    # kopf logs in as the Kubernetes client does (the kubeconfig, or the pod's ServiceAccount):
    # what kopf's own default registry would pick, with the client installed.
    kopf.on.login(registry=handlers)(kopf.login_via_client)
    kopf.on.startup(registry=handlers)(configure)
    kopf.on.cleanup(registry=handlers)(stopping)
    for cause in (kopf.on.resume, kopf.on.create, kopf.on.update):
        cause(GROUP, VERSION, PLURAL, registry=handlers)(classifier_changed)
    for kind in WATCHED:
        resource = (kind.group, kind.version, kind.plural)
        kopf.index(*resource, id=index_id(kind), labels=MANAGED, registry=handlers)(copy_of)
        kopf.on.event(*resource, labels=MANAGED, registry=handlers)(child_changed)
    return handlers


def index_id(kind: Kind) -> str:
    """The name of the kopf index that keeps the copies of one watched kind."""
    return f"copies-{kind.plural}"


async def copy_of(body: kopf.Body, **_: Any) -> dict[Key, dict[str, Any]] | None:
    """The latest copy of a watched child or pod, by its classifier (namespace, name): what
    passes read instead of GETs and LISTs. kopf keeps these indices from its watch streams,
    updates one before the event's handlers run, and runs no handler before every watched
    kind's first listing is in."""
    meta = body.metadata
    name = meta.labels.get(INSTANCE_LABEL)
    if not (name and meta.namespace):
        return None
    obj = copy.deepcopy(dict(body))
    obj["metadata"].pop("managedFields", None)  # nothing reads them: half a pod's size
    return {(meta.namespace, name): obj}


async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    """Keep kopf's bookkeeping in our own annotations (the status belongs to the CRD schema),
    and start the pass queue, in `memo` where every handler finds it."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.networking.connect_timeout = KOPF_CONNECT_TIMEOUT
    settings.networking.request_timeout = KOPF_REQUEST_TIMEOUT
    settings.process.ultimate_exiting_timeout = KOPF_EXIT_TIMEOUT
    settings.execution.max_workers = PASS_WORKERS
    memo["kube"] = Kube(load_config())
    # kopf's indices, the watches' copies (kopf hands each handler each index by its id).
    memo["indices"] = {index_id(kind): kwargs[index_id(kind)] for kind in WATCHED}
    memo["loop"] = asyncio.get_running_loop()
    passes = PassQueue(
        functools.partial(_pass, memo),
        _failed,
        workers=PASS_WORKERS,
        coalesce=COALESCE_SECONDS,
        recheck=CONFLICT_RECHECK_SECONDS,
        retry_rate=RETRY_RATE,
        retry_burst=RETRY_BURST,
    )
    passes.start(asyncio.get_running_loop(), settings.execution.executor)
    memo["passes"] = passes


async def stopping(memo: kopf.Memo, **_: Any) -> None:
    """kopf has stopped (however it was told): no pass starts any more, and those in flight
    end before kopf does (the command line's watchdog bounds the wait)."""
    stop_passes(memo)
    passes: PassQueue | None = memo.get("passes")
    if passes is not None:
        await passes.drained()


def stop_passes(memo: kopf.Memo) -> None:
    """Start no new pass; whoever waits for one returns (from kopf's event loop)."""
    passes: PassQueue | None = memo.get("passes")
    if passes is not None:
        passes.stop()


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


async def classifier_changed(name: str, namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    """The classifier was created, edited, or found at startup: a pass at once. kopf records
    it handled (its annotation) once that pass has run; the queue retries it while it fails."""
    if namespace:  # always set: the resource is namespaced
        passes: PassQueue = memo["passes"]
        await passes.pass_now((namespace, name), "a change of the classifier")


async def child_changed(
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
    passes: PassQueue = memo["passes"]
    why = f"{resource.kind} {child[2]} {type or 'listed'}"
    passes.child_changed((namespace, name), child, version, why)


def ref(namespace: str, name: str) -> str:
    """How log lines name a classifier (kopf's own prefix for the objects it logs about)."""
    return f"[{namespace}/{name}]"


def _pass(memo: kopf.Memo, key: Key) -> Done:
    """One pass of the classifier, on a fresh read of it (in one of the queue's workers)."""
    namespace, name = key
    shared: Kube = memo["kube"]
    passes: PassQueue = memo["passes"]
    loop: asyncio.AbstractEventLoop = memo["loop"]
    children, pods = asyncio.run_coroutine_threadsafe(copies(memo, key), loop).result(
        SNAPSHOT_TIMEOUT
    )
    kube = CachedKube(shared.api, children, pods)
    try:
        owner = kube.get(CLASSIFIERS, namespace, name)
        if owner is None or owner["metadata"].get("deletionTimestamp"):
            return Done()  # the classifier is gone; garbage collection removes the rest
        hpa = (HPAS.plural, namespace, name)
        hpa_may_exist = hpa in children or passes.exists(hpa)
        new = reconcile(kube, owner, _poster(shared, owner), hpa_may_exist=hpa_may_exist)
    except (ApiException, urllib3.exceptions.HTTPError) as exc:
        if namespace_terminating(exc):
            logger.debug("%s Namespace being deleted: nothing to do", ref(namespace, name))
            return Done()
        raise
    _log_outcome(namespace, name, owner.get("status") or {}, new)
    # What the pass read or wrote of the children (not of the classifier, nor its Events).
    versions = {child: v for child, v in kube.versions.items() if child[0] in _CHILDREN}
    return Done(versions, recheck=status.needs_recheck(new))


async def copies(
    memo: kopf.Memo, key: Key
) -> tuple[dict[ObjectKey, dict[str, Any]], list[dict[str, Any]]]:
    """The watches' copies of the classifier's children and pods, as a pass starts (on kopf's
    loop, where the indices change). A child is left out, to be read from the API server,
    when the copy may be older than what a pass saw: a pass found it missing or deleted it
    since the watch last saw it, or read or wrote a later version."""
    indices: Mapping[str, kopf.Index[Key, dict[str, Any]]] = memo["indices"]
    passes: PassQueue = memo["passes"]
    children: dict[ObjectKey, dict[str, Any]] = {}
    for kind in WATCHED:
        if kind == PODS:
            continue
        for obj in indices[index_id(kind)].get(key, ()):
            meta = obj["metadata"]
            ref = (kind.plural, meta["namespace"], meta["name"])
            if passes.exists(ref) and not older(meta["resourceVersion"], passes.seen(ref)):
                children[ref] = obj
    return children, list(indices[index_id(PODS)].get(key, ()))


def older(version: str, than: str | None) -> bool:
    """Whether a copy at `version` predates `than`. resourceVersions are etcd's revisions,
    integers (clients are told not to rely on it: a version that is not one counts as current,
    as the copy is at least as recent as the event that asked for the pass)."""
    if not than or not (version.isdigit() and than.isdigit()):
        return False
    return int(version) < int(than)


def _failed(key: Key, exc: Exception, attempt: int, why: str) -> float:
    """A pass was cut short: logged, and retried in the seconds returned (see PASS_BACKOFFS)."""
    where = ref(*key)
    pause = PASS_BACKOFFS[attempt - 1] if attempt <= len(PASS_BACKOFFS) else None
    delay = retry_delay(exc, pause)
    if delay is not None:
        logger.warning(
            "%s Pass %d failed (%s); retrying in %.1fs", where, attempt, describe(exc), delay
        )
        return delay
    if isinstance(exc, ApiException | urllib3.exceptions.HTTPError):
        logger.error(
            "%s Pass after %s failed: %s; retrying in %ds", where, why, describe(exc), RETRY_SECONDS
        )
    else:  # a bug: its traceback
        logger.error(
            "%s Pass after %s failed; retrying in %ds", where, why, RETRY_SECONDS, exc_info=exc
        )
    return RETRY_SECONDS


def _log_outcome(namespace: str, name: str, before: dict[str, Any], after: dict[str, Any]) -> None:
    """A rejected spec is a warning, once per rejection; routine passes are debug."""
    ready = status.ready_condition(after) or {}
    if ready.get("reason") == "InvalidSpec" and ready != status.ready_condition(before):
        logger.warning("%s Spec rejected: %s", ref(namespace, name), ready.get("message"))
    else:
        logger.debug("%s Reconciled: %s", ref(namespace, name), ready.get("reason"))


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
