"""Leader election on a coordination.k8s.io/v1 Lease: one replica acts, the others stand by.

The protocol is client-go's (`k8s.io/client-go/tools/leaderelection`), with its defaults:

- the leader renews the Lease every RETRY_PERIOD seconds; if it cannot for RENEW_DEADLINE
  seconds it has lost the lease and must stop acting at once (the caller exits);
- a standby takes the Lease when it has no holder (the leader released it on exit) or when
  its record has not changed for LEASE_DURATION seconds by the standby's own clock (the
  leader died). LEASE_DURATION > RENEW_DEADLINE is what keeps two leaders from overlapping:
  a cut-off leader gives up before any standby may take over.

Writes are PUTs carrying the resourceVersion read, so two standbys racing for a free Lease
cannot both win: the API server answers the second with 409.
"""

import datetime
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import urllib3
from kubernetes.client.exceptions import ApiException

from kubeclassify_operator.kube import Kube, describe

LEASE_DURATION = 15.0
RENEW_DEADLINE = 10.0
RETRY_PERIOD = 2.0
# (connect, read) seconds for Lease calls: a renewal must fail well within RENEW_DEADLINE.
LEASE_TIMEOUT = (1.0, 2.0)

logger = logging.getLogger(__name__)


class LeaseUnavailable(Exception):
    """The Lease cannot be used at all (missing namespace, no RBAC grant): a setup error."""


def lease_path(namespace: str, name: str | None = None) -> str:
    path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
    return f"{path}/{name}" if name else path


def micro_time(now: datetime.datetime | None = None) -> str:
    """A Kubernetes MicroTime (RFC 3339 with microseconds, UTC)."""
    now = now or datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def holder_of(lease: dict[str, Any] | None) -> str:
    return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")


def may_take(lease: dict[str, Any], identity: str, unchanged_for: float) -> bool:
    """Whether `identity` may take the Lease whose record has not changed for `unchanged_for`
    seconds (as this process observed it): it is free, already ours, or its holder stopped
    renewing."""
    holder = holder_of(lease)
    duration = float(lease.get("spec", {}).get("leaseDurationSeconds") or LEASE_DURATION)
    return not holder or holder == identity or unchanged_for >= duration


def claimed(lease: dict[str, Any], identity: str, now: str) -> dict[str, Any]:
    """The Lease as `identity` writes it to take it over (or renew it, when already its own)."""
    spec = dict(lease.get("spec") or {})
    if holder_of(lease) != identity:  # a new Lease starts at 0 transitions, a takeover adds one
        transitions = int(spec.get("leaseTransitions") or 0) + 1 if spec else 0
        spec.update(acquireTime=now, leaseTransitions=transitions)
    spec.update(holderIdentity=identity, leaseDurationSeconds=int(LEASE_DURATION), renewTime=now)
    return {**lease, "spec": spec}


def released(lease: dict[str, Any], now: str) -> dict[str, Any]:
    """The Lease as its leader leaves it on a clean exit: no holder, so a standby takes it on
    its next try instead of waiting LEASE_DURATION (client-go's ReleaseOnCancel)."""
    spec = dict(lease.get("spec") or {})
    spec.pop("holderIdentity", None)
    spec.update(leaseDurationSeconds=1, renewTime=now)
    return {**lease, "spec": spec}


@dataclass
class Elector:
    """One replica's side of the election for the Lease `namespace/name`."""

    kube: Kube
    namespace: str
    name: str
    identity: str
    clock: Callable[[], float] = time.monotonic
    _lease: dict[str, Any] | None = field(default=None, init=False)  # as held by us
    _last_read: dict[str, Any] | None = field(default=None, init=False)  # for messages
    _seen_version: str = field(default="", init=False)
    _seen_at: float = field(default=0.0, init=False)

    @property
    def where(self) -> str:
        return f"Lease {self.namespace}/{self.name}"

    def try_acquire(self) -> bool:
        """One attempt to become (or stay) the leader; True if this replica holds the Lease."""
        lease = self._call("GET", lease_path(self.namespace, self.name))
        now = micro_time()
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
            }
            return self._write(
                "POST", lease_path(self.namespace), claimed(body, self.identity, now)
            )
        version = lease["metadata"].get("resourceVersion", "")
        if version != self._seen_version:
            self._seen_version, self._seen_at = version, self.clock()
        if not may_take(lease, self.identity, self.clock() - self._seen_at):
            return False
        path = lease_path(self.namespace, self.name)
        return self._write("PUT", path, claimed(lease, self.identity, now))

    def renew(self) -> bool:
        """Renew the Lease held; False if another replica holds it now."""
        if self._lease is None:
            return self.try_acquire()
        path = lease_path(self.namespace, self.name)
        if self._write("PUT", path, claimed(self._lease, self.identity, micro_time())):
            return True
        return self.try_acquire()  # 409: re-read; still ours only if nobody took it

    def release(self) -> None:
        """Give the Lease up at once (best effort: on failure it simply expires)."""
        if self._lease is None:
            return
        lease, self._lease = self._lease, None
        try:
            self._call("PUT", lease_path(self.namespace, self.name), released(lease, micro_time()))
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            logger.warning(
                "Could not release the %s (%s); it expires by itself", self.where, describe(exc)
            )

    def wait_until_leader(self, stop: threading.Event) -> bool:
        """Stand by until this replica holds the Lease (True) or `stop` is set (False)."""
        told = ""
        while not stop.is_set():
            try:
                if self.try_acquire():
                    logger.info(
                        "Acquired the %s as %s: this replica acts", self.where, self.identity
                    )
                    return True
            except (ApiException, urllib3.exceptions.HTTPError) as exc:
                logger.warning(
                    "Could not read the %s (%s); trying again", self.where, describe(exc)
                )
            else:
                holder = holder_of(self._last_read)
                if holder != told:
                    logger.info("Standing by: the %s is held by %s", self.where, holder)
                    told = holder
            stop.wait(RETRY_PERIOD)
        return False

    def keep(self, stop: threading.Event, lost: Callable[[str], None]) -> None:
        """Renew every RETRY_PERIOD until `stop` is set; call `lost` once the Lease is gone."""
        renewed = self.clock()
        while not stop.wait(RETRY_PERIOD):
            try:
                if self.renew():
                    renewed = self.clock()
                    continue
                lost(f"the {self.where} is now held by {holder_of(self._last_read)}")
                return
            except LeaseUnavailable as exc:  # e.g. the grant was revoked
                lost(str(exc))
                return
            except (ApiException, urllib3.exceptions.HTTPError) as exc:
                logger.warning("Could not renew the %s (%s)", self.where, describe(exc))
            if self.clock() - renewed >= RENEW_DEADLINE:
                lost(f"the {self.where} could not be renewed for {RENEW_DEADLINE:.0f}s")
                return

    def _write(self, method: str, path: str, body: dict[str, Any]) -> bool:
        """Write the claim; False if another writer came first (409)."""
        try:
            self._lease = self._call(method, path, body)
        except ApiException as exc:
            if exc.status == 409:
                self._lease = None
                return False
            raise
        if self._lease is not None:
            self._seen_version = self._lease["metadata"].get("resourceVersion", "")
            self._seen_at = self.clock()
        return self._lease is not None

    def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any] | None:
        try:
            answer = self.kube.request(method, path, body, timeout=LEASE_TIMEOUT)
        except ApiException as exc:
            if exc.status in (401, 403):
                raise LeaseUnavailable(
                    f"the operator may not use the {self.where} (HTTP {exc.status}): grant it "
                    "get/create/update on leases (deploy/rbac.yaml), or run with --standalone"
                ) from exc
            raise
        if answer is None and method == "POST":
            raise LeaseUnavailable(
                f"cannot create the {self.where}: namespace {self.namespace} not found (create it, "
                "pass --lease-namespace, or run a single replica with --standalone)"
            )
        self._last_read = answer
        return answer
