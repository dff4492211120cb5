"""Scale benchmark of the operator: the real `kubeclassify-operator` process with hundreds of
ImageClassifiers (issues 4 and 9), against a real Kubernetes control plane (`../shared/k8s`)
and against kmock's API emulator.

Real plane: the operator runs as deploy/'s ServiceAccount (a TokenRequest token), electing its
leader in a Lease as deploy/ runs it; the API server's audit log counts its requests. The real
controllers and scheduler act (no kubelet: pods stay Pending, Unschedulable). Phases: create
them all; stay idle; change every spec at once.
Emulator: the emulator counts the requests; the bench writes the Deployments' and Services'
statuses as the controllers would (phase "available").

The operator's CPU and memory come from /proc. The bench watches the API (no polling) to time
each phase. Everything runs on loopback and stops by itself. Writes its section of
docs/benchmarks.md.

Run: python bench/operator_scale.py [--api both|plane|emulator] [--classifiers 500]
     [--namespaces 10] [--idle-seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from report import write_section

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "support"))  # the emulator shared with the tests

from control_plane import (  # noqa: E402
    OPERATOR_NAMESPACE,
    OPERATOR_SA,
    OPERATOR_USER,
    RUN_ENV,
    ControlPlane,
    rbac_triple,
)
from kmock._internal import rendering  # noqa: E402
from kube_emulator import (  # noqa: E402
    IC_PATH,
    ApiServerEmulator,
    EmulatorThread,
    call_of,
    write_kubeconfig,
)
from kubeclassify_operator.spec import GROUP, KIND, VERSION  # noqa: E402
from serving import free_port  # noqa: E402

BENCH_AGENT = "kubeclassify-operator-scale-bench"  # the bench's own requests are not counted
# RBAC verbs (the emulator's and the audit log's), shown as the HTTP requests they were.
HTTP_VERBS = {
    "get": "GET",
    "list": "LIST",
    "watch": "WATCH",
    "create": "POST",
    "patch": "PATCH",
    "update": "PUT",
    "delete": "DELETE",
    "deletecollection": "DELETE",
}
COLUMNS = ("GET", "LIST", "WATCH", "POST", "PATCH", "PUT", "DELETE")
WRITES = frozenset({"POST", "PATCH", "DELETE", "PUT"})
LEASES = "leases"  # leader election: the leader renews its Lease every 2 s, a write by design
STATUS = "imageclassifiers/status"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BOOKMARK_SECONDS = 30.0  # a real API server sends one about every minute
QUIET_SECONDS = 3.0  # a phase is over once the operator has sent nothing for this long
Key = tuple[str, str]  # (namespace, name)
Auth = dict[str, Any]  # requests' cert= and verify=
Test = Callable[[dict[str, Any]], bool]
Goal = tuple[str, list[tuple["Watch", Test]]]  # what must hold, for every object of each watch


class Counts:
    """The operator's requests by (verb, resource), when the latest was sent (Lease renewals
    aside: they never stop) and when its latest status write was."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self.counts_lock = threading.Lock()
        self.last_request = time.monotonic()
        self.last_status_write = 0.0

    def count(self, verb: str, resource: str, when: float) -> None:
        with self.counts_lock:
            self.counts[verb, resource] += 1
            if resource != LEASES:
                self.last_request = max(self.last_request, when)
            if resource == STATUS and verb in WRITES:
                self.last_status_write = max(self.last_status_write, when)

    def snapshot(self) -> Counter[tuple[str, str]]:
        with self.counts_lock:
            return Counter(self.counts)


class CountingEmulator(ApiServerEmulator, Counts):
    """The shared emulator, counting requests by (verb, resource) instead of logging them.

    Only counters are kept, so memory stays flat (the shared call journal is switched off).
    """

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        Counts.__init__(self)
        self.record_calls = False
        self.bookmarks: asyncio.Task[None] | None = None

    async def _handle(self, request: rendering.Request) -> Any:
        if self.bookmarks is None:
            self.bookmarks = asyncio.get_running_loop().create_task(self._send_bookmarks())
        if request.headers.get("User-Agent") != BENCH_AGENT:
            call = call_of(request)
            verb, resource = (
                (HTTP_VERBS[call.verb], call.resource) if call else ("GET", "discovery")
            )
            self.count(verb, resource, time.monotonic())
        return await super()._handle(request)

    async def _send_bookmarks(self) -> None:
        """A BOOKMARK on every watch stream now and then, as an API server sends when asked
        (kopf asks). kmock sends none, and kopf takes a watch quiet for 70 s for dead and
        reconnects: the idle phase would then measure reconnects instead of the operator."""
        bookmark = {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "0"}}}
        while True:
            await asyncio.sleep(BOOKMARK_SECONDS)
            for bus in list(self._buses.values()):
                await bus.put(bookmark)


class AuditCounts(Counts, threading.Thread):
    """The operator's requests as the real API server's audit log records them (Metadata
    level: one line per request and stage), read as it grows."""

    def __init__(self, audit_log: Path) -> None:
        Counts.__init__(self)
        threading.Thread.__init__(self, daemon=True)
        self.audit_log = audit_log
        self.seen: set[str] = set()  # auditIDs: a watch is logged when it starts and ends
        # Audit times are wall-clock; the phases are timed on the monotonic clock.
        self.offset = time.monotonic() - time.time()

    def run(self) -> None:
        while not self.audit_log.exists():
            time.sleep(0.1)
        with self.audit_log.open() as log:
            partial = ""
            while True:
                line = log.readline()
                if not line.endswith("\n"):
                    partial += line
                    time.sleep(0.1)
                    continue
                self._seen(json.loads(partial + line))
                partial = ""

    def _seen(self, event: dict[str, Any]) -> None:
        if event["user"].get("username") != OPERATOR_USER or event["auditID"] in self.seen:
            return
        self.seen.add(event["auditID"])
        triple = rbac_triple(event)
        resource = triple[1] if triple else "discovery"
        received = datetime.datetime.fromisoformat(event["requestReceivedTimestamp"])
        self.count(HTTP_VERBS[event["verb"]], resource, received.timestamp() + self.offset)


@dataclass
class Tracker:
    """When each object first passed `test`, as seen on the watch stream."""

    test: Callable[[dict[str, Any]], bool]
    done: dict[Key, float] = field(default_factory=dict)


class Watch(threading.Thread):
    """The latest copy of every object of one resource, kept from a cluster-wide watch stream.

    Watching rather than polling times each phase to the event without loading the emulator
    (which shares the CPU with the operator) with repeated listings.
    """

    def __init__(self, url: str, auth: Auth) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.auth = auth
        self.objects: dict[Key, dict[str, Any]] = {}
        self.trackers: list[Tracker] = []
        self.events: Counter[str] = Counter()  # ADDED, MODIFIED, DELETED: what the operator sees
        self.first_seen: dict[Key, float] = {}  # when each object first came in
        self.last_change = 0.0  # when the latest event that was news came in
        self.lock = threading.Lock()
        self.started_streaming = threading.Event()
        self.stopped = threading.Event()  # the API is going away: a cut stream is the end

    def run(self) -> None:
        """Watch, and watch again whenever the stream ends or reports an error; each new watch
        replays every object, so no state is missed. From resourceVersion 0: the API server's
        watch cache as it is. Without one the watch must start at etcd's latest version, which
        this plane's etcd (3.5.1, no progress notifications) lets a cache reach only through
        events of that very resource: the API server waits 3 s, then answers 504 "Too large
        resource version", again and again for a resource nothing changes (a fresh namespace's
        Services, say)."""
        headers = {"User-Agent": BENCH_AGENT}
        params = {"watch": "true", "resourceVersion": "0"}
        while not self.stopped.is_set():
            try:
                with requests.get(
                    self.url, params=params, headers=headers, stream=True, timeout=None, **self.auth
                ) as r:
                    self.started_streaming.set()
                    for line in r.iter_lines(chunk_size=None):
                        if line and self._seen(json.loads(line)) == "ERROR":
                            break
            except requests.RequestException:
                pass  # a cut stream: watch again, unless stopped
            time.sleep(1)

    def _seen(self, event: dict[str, Any]) -> str:
        obj = event.get("object")
        type_ = str(event.get("type"))
        if type_ not in ("ADDED", "MODIFIED", "DELETED") or not obj:
            return type_  # ERROR or BOOKMARK
        key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        version = obj["metadata"].get("resourceVersion")
        now = time.monotonic()
        with self.lock:
            known = self.objects.get(key, {}).get("metadata", {}).get("resourceVersion")
            if known != version or type_ == "DELETED":  # not a replay after a new watch
                self.events[type_] += 1
                self.last_change = now
            if type_ == "DELETED":
                self.objects.pop(key, None)
                return type_
            self.first_seen.setdefault(key, now)
            self.objects[key] = obj
            for tracker in self.trackers:
                if key not in tracker.done and tracker.test(obj):
                    tracker.done[key] = now
        return type_

    def track(self, test: Callable[[dict[str, Any]], bool]) -> Tracker:
        tracker = Tracker(test)
        now = time.monotonic()
        with self.lock:
            tracker.done = {key: now for key, obj in self.objects.items() if test(obj)}
            self.trackers.append(tracker)
        return tracker

    def untrack(self, tracker: Tracker) -> None:
        with self.lock:
            self.trackers.remove(tracker)

    def copy(self) -> dict[Key, dict[str, Any]]:
        with self.lock:
            return dict(self.objects)

    def changed_last(self) -> float:
        with self.lock:
            return self.last_change

    def new_since(self, since: float) -> list[float]:
        """When each object first seen after `since` came in."""
        with self.lock:
            return [t for t in self.first_seen.values() if t > since]

    def last_new(self, since: float) -> float | None:
        """When the latest object first seen after `since` came in (None: none did)."""
        return max(self.new_since(since), default=None)

    def event_counts(self) -> Counter[str]:
        with self.lock:
            return Counter(self.events)


@dataclass
class Watches:
    classifiers: Watch
    deployments: Watch
    services: Watch
    pods: Watch

    @classmethod
    def start(cls, url: str, auth: Auth) -> Watches:
        watches = cls(
            Watch(f"{url}{IC_PATH}/imageclassifiers", auth),
            Watch(f"{url}/apis/apps/v1/deployments", auth),
            Watch(f"{url}/api/v1/services", auth),
            Watch(f"{url}/api/v1/pods", auth),
        )
        for watch in watches.all():
            watch.start()
            assert watch.started_streaming.wait(10), f"cannot watch {watch.url}"
        return watches

    def all(self) -> tuple[Watch, Watch, Watch, Watch]:
        return self.classifiers, self.deployments, self.services, self.pods

    def stop(self) -> None:
        for watch in self.all():
            watch.stopped.set()

    def event_counts(self) -> Counter[tuple[str, str]]:
        """Watch events so far by (kind, type): what triggers the operator's passes."""
        kinds = ("ImageClassifier", "Deployment", "Service", "Pod")
        return Counter(
            {
                (kind, type_): n
                for kind, watch in zip(kinds, self.all(), strict=True)
                for type_, n in watch.event_counts().items()
            }
        )


def wait_all(
    goals: Iterable[tuple[Watch, Test]],
    count: int,
    since: float,
    timeout: float,
) -> tuple[float | None, int]:
    """Seconds from `since` until `count` objects of every watch passed their test (None on
    timeout), and how many made it."""
    trackers = [(watch, watch.track(test)) for watch, test in goals]
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(len(tracker.done) >= count for _, tracker in trackers):
                return max(max(t.done.values()) for _, t in trackers) - since, count
            time.sleep(0.05)
        return None, min(len(tracker.done) for _, tracker in trackers)
    finally:
        for watch, tracker in trackers:
            watch.untrack(tracker)


def wait_quiet(counts: Counts, limit: float) -> float:
    """Wait until the operator has been silent for QUIET_SECONDS (Lease renewals aside);
    return its last request time."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        silent = time.monotonic() - counts.last_request
        if silent >= QUIET_SECONDS:
            break
        time.sleep(max(QUIET_SECONDS - silent, 0.1))
    return counts.last_request


def ready(ic: dict[str, Any]) -> bool:
    conditions = ic.get("status", {}).get("conditions", [])
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def observed(generation: int) -> Callable[[dict[str, Any]], bool]:
    def test(ic: dict[str, Any]) -> bool:
        status = ic.get("status", {})
        return bool(status.get("conditions")) and status.get("observedGeneration") == generation

    return test


def has_env(name: str, value: str) -> Callable[[dict[str, Any]], bool]:
    def test(deployment: dict[str, Any]) -> bool:
        containers = deployment.get("spec", {}).get("template", {}).get("spec", {})
        env = containers.get("containers", [{}])[0].get("env", [])
        return {"name": name, "value": value} in env

    return test


def exists(_: dict[str, Any]) -> bool:
    return True


def unschedulable(pod: dict[str, Any]) -> bool:
    """The scheduler has marked the pod (no node to put it on)."""
    conditions = pod.get("status", {}).get("conditions", [])
    return any(
        c.get("type") == "PodScheduled" and c.get("reason") == "Unschedulable" for c in conditions
    )


def says_unschedulable(ic: dict[str, Any]) -> bool:
    conditions = ic.get("status", {}).get("conditions", [])
    return any(c.get("type") == "Ready" and c.get("reason") == "Unschedulable" for c in conditions)


# --- the operator process -----------------------------------------------------------------


@dataclass
class Proc:
    """CPU and memory of a process (or thread) from /proc."""

    pid: int
    stat_path: Path

    @classmethod
    def of(cls, pid: int, tid: int | None = None) -> Proc:
        task = f"/proc/{pid}/task/{tid}" if tid else f"/proc/{pid}"
        return cls(pid, Path(task) / "stat")

    def cpu_seconds(self) -> float:
        """user + system time so far."""
        fields = self.stat_path.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def memory_mb(self, key: str) -> float:
        """VmRSS (now) or VmHWM (peak) of the whole process, in MiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
        raise KeyError(key)


def start_operator(
    kubeconfig: Path, log_path: Path, *args: str
) -> tuple[subprocess.Popen[bytes], str]:
    """The installed console command, cluster-wide, with `args`."""
    command = shutil.which("kubeclassify-operator", path=str(Path(sys.executable).parent))
    if not command:
        sys.exit("install the operator first: make install-dev")
    liveness = f"http://127.0.0.1:{free_port()}/healthz"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "POD_ID": "bench-operator"}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [command, *args, "--liveness", liveness],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 90  # a standby waits for the Lease; kopf then starts
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"the operator exited:\n{log_path.read_text()}")
        try:
            if requests.get(liveness, timeout=1).ok:
                return process, liveness
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    process.kill()
    sys.exit(f"the operator did not become live in 90 s:\n{log_path.read_text()}")


def stop_operator(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# --- the phases -------------------------------------------------------------------------------


@dataclass
class Phase:
    """One phase: how long until its goal held, and what the operator sent meanwhile."""

    name: str
    goal: str
    seconds: float | None  # None: the goal was not reached before the timeout
    reached: int
    requests: Counter[tuple[str, str]]
    events: Counter[tuple[str, str]]  # watch events by (kind, type) over the phase
    sent_seconds: float  # how long the bench took to send its own writes
    last_request_s: float  # the operator's last request of the phase, from the phase start
    last_status_write_s: float | None  # its last status write, from the bench's last write
    operator_cores: float  # CPU over the phase (until silent)
    server_cores: float  # the emulator's thread, or the API server (and etcd)

    def by_verb(self) -> Counter[str]:
        verbs: Counter[str] = Counter()
        for (verb, _), n in self.requests.items():
            verbs[verb] += n
        return verbs


@dataclass
class Results:
    api: str  # "plane" or "emulator"
    classifiers: int
    namespaces: int
    idle_seconds: float
    phases: list[Phase] = field(default_factory=list)
    idle: Counter[tuple[str, str]] = field(default_factory=Counter)
    idle_events: Counter[tuple[str, str]] = field(default_factory=Counter)
    idle_operator_cores: float = 0.0
    idle_server_cores: float = 0.0
    rss_mb: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: float = 0.0
    load: list[float] = field(default_factory=list)  # 1-min load average through the run
    # When the controllers made the last pod, from the bench's last create (the real plane).
    last_pod_made_s: float | None = None
    # When the operator made the last Deployment, from the bench's last create.
    last_deployment_made_s: float | None = None
    # When the Deployments last changed in the create phase (their controller's status
    # updates, after the operator's creates), from the bench's last create.
    last_deployment_change_s: float | None = None
    # The pods the controllers made in the create phase, and over how many seconds.
    pods_made: tuple[int, float] | None = None
    log_lines: int = 0
    log_problems: list[str] = field(default_factory=list)


@dataclass
class Bench:
    """What the phases drive and measure."""

    url: str
    auth: Auth
    counts: Counts
    watches: Watches
    operator: Proc
    server: list[Proc]  # the emulator's thread, or the API server and etcd
    session: requests.Session = field(default_factory=requests.Session)
    load: list[float] = field(default_factory=list)  # the 1-min load average after each phase

    def __post_init__(self) -> None:
        self.session.headers["User-Agent"] = BENCH_AGENT
        self.session.cert = self.auth.get("cert")
        self.session.verify = self.auth.get("verify", True)
        self.session.trust_env = False  # no proxy for loopback, the plane's CA only

    def server_seconds(self) -> float:
        return sum(proc.cpu_seconds() for proc in self.server)

    def send(self, method: str, path: str, body: dict[str, Any]) -> None:
        headers = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else {}
        self.session.request(method, self.url + path, json=body, headers=headers, timeout=30)
        # raise_for_status is left out on purpose: a failure shows up as an unreached goal.

    def phase(
        self,
        name: str,
        writes: Callable[[], None],
        goals: list[Goal],
        count: int,
        timeout: float,
    ) -> list[Phase]:
        """Send the bench's writes, time each goal from the same start, then wait for the
        operator to fall silent; one row per goal, sharing the phase's requests and CPU."""
        before, events = self.counts.snapshot(), self.watches.event_counts()
        cpu = self.operator.cpu_seconds(), self.server_seconds()
        started = time.monotonic()
        writes()
        sent = time.monotonic() - started
        timed = []
        for goal, tests in goals:
            seconds, reached = wait_all(tests, count, started, timeout)
            done = f"{seconds:.1f} s" if seconds is not None else f"NOT reached ({reached}/{count})"
            print(f"{name}: {goal}: {done}; bench writes took {sent:.1f} s", flush=True)
            timed.append((goal, seconds, reached))
        last = wait_quiet(self.counts, timeout)
        elapsed = time.monotonic() - started
        operator_cores = (self.operator.cpu_seconds() - cpu[0]) / elapsed
        server_cores = (self.server_seconds() - cpu[1]) / elapsed
        counts = self.counts.snapshot()
        counts.subtract(before)
        seen = self.watches.event_counts()
        seen.subtract(events)
        status_write = self.counts.last_status_write
        self.load.append(os.getloadavg()[0])
        return [
            Phase(
                name,
                goal,
                seconds,
                reached,
                +counts,
                +seen,
                sent,
                last - started,
                status_write - started - sent if status_write > started else None,
                operator_cores,
                server_cores,
            )
            for goal, seconds, reached in timed
        ]


def classifier_path(namespace: str, name: str = "") -> str:
    path = f"{IC_PATH}/namespaces/{namespace}/imageclassifiers"
    return f"{path}/{name}" if name else path


def run(bench: Bench, keys: list[Key], results: Results, timeout: float) -> None:
    watches = bench.watches
    n = len(keys)
    results.rss_mb["idle, no classifiers"] = bench.operator.memory_mb("VmRSS")

    def create() -> None:
        for namespace, name in keys:
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": KIND,
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"model": "resnet50", "replicas": 1},
            }
            bench.send("POST", classifier_path(namespace), body)

    goals: list[Goal] = [
        (
            "all Deployments and Services exist",
            [(watches.deployments, exists), (watches.services, exists)],
        ),
        ("all statuses written", [(watches.classifiers, observed(1))]),
    ]
    if results.api == "plane":  # what the real controllers and scheduler do, and its status
        goals += [
            ("all pods marked Unschedulable by the scheduler", [(watches.pods, unschedulable)]),
            ("all statuses say Unschedulable", [(watches.classifiers, says_unschedulable)]),
        ]
    before_create = time.monotonic()
    results.phases += bench.phase("create", create, goals, n, timeout)
    last_pod = watches.pods.last_new(before_create)
    sent = results.phases[0].sent_seconds
    if results.api == "plane" and last_pod is not None:
        results.last_pod_made_s = last_pod - before_create - sent
    last_deployment = watches.deployments.last_new(before_create)
    if last_deployment is not None:
        results.last_deployment_made_s = last_deployment - before_create - sent
    if results.api == "plane":
        changed = watches.deployments.changed_last() - before_create - sent
        results.last_deployment_change_s = changed
    made = watches.pods.new_since(before_create)
    if made:
        results.pods_made = len(made), max(made) - min(made)
    results.rss_mb[f"after creating {n}"] = bench.operator.memory_mb("VmRSS")

    def report_available() -> None:
        """What the deployment controller and the cloud's load balancer would write."""
        deployments = watches.deployments.copy()
        for i, (namespace, name) in enumerate(keys):
            deployment = deployments.get((namespace, name), {})
            replicas = deployment.get("spec", {}).get("replicas", 1)
            available = {
                "observedGeneration": deployment.get("metadata", {}).get("generation", 1),
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
                "conditions": [
                    {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}
                ],
            }
            apps = f"/apis/apps/v1/namespaces/{namespace}"
            bench.send("PATCH", f"{apps}/deployments/{name}/status", {"status": available})
            ingress = {"loadBalancer": {"ingress": [{"ip": f"203.0.113.{i % 254 + 1}"}]}}
            path = f"/api/v1/namespaces/{namespace}/services/{name}/status"
            bench.send("PATCH", path, {"status": ingress})

    if results.api == "emulator":  # on the plane, the real controllers write the statuses
        results.phases += bench.phase(
            "available",
            report_available,
            [("all Ready=True", [(watches.classifiers, ready)])],
            n,
            timeout,
        )

    # Steady state: nothing changes; the operator should only hold its watches (and Lease).
    before, events = bench.counts.snapshot(), watches.event_counts()
    cpu_before = bench.operator.cpu_seconds()
    server_before = bench.server_seconds()
    started = time.monotonic()
    time.sleep(results.idle_seconds)
    elapsed = time.monotonic() - started
    results.idle_operator_cores = (bench.operator.cpu_seconds() - cpu_before) / elapsed
    results.idle_server_cores = (bench.server_seconds() - server_before) / elapsed
    idle = bench.counts.snapshot()
    idle.subtract(before)
    results.idle = +idle
    seen = watches.event_counts()
    seen.subtract(events)
    results.idle_events = +seen
    results.rss_mb[f"after {results.idle_seconds:.0f} s idle"] = bench.operator.memory_mb("VmRSS")
    print(f"idle: {sum(results.idle.values())} requests, {dict(results.idle)}", flush=True)

    def change_specs() -> None:
        for namespace, name in keys:
            patch = {"spec": {"env": [{"name": "BENCH_ROUND", "value": "2"}]}}
            bench.send("PATCH", classifier_path(namespace, name), patch)

    results.phases += bench.phase(
        "spec change",
        change_specs,
        [
            ("all Deployments match", [(watches.deployments, has_env("BENCH_ROUND", "2"))]),
            ("all statuses observe it", [(watches.classifiers, observed(2))]),
        ],
        n,
        timeout,
    )
    results.rss_mb[f"after {n} spec changes"] = bench.operator.memory_mb("VmRSS")
    results.peak_rss_mb = bench.operator.memory_mb("VmHWM")


# --- the report -------------------------------------------------------------------------------


def per_classifier(counts: Counter[tuple[str, str]], n: int, leases: bool = False) -> float:
    """Requests per classifier (the Lease's renewals left out unless `leases`)."""
    return sum(c for (_, res), c in counts.items() if leases or res != LEASES) / n


def writes_of(counts: Counter[tuple[str, str]]) -> int:
    """Writes, Lease renewals aside."""
    return sum(c for (verb, res), c in counts.items() if verb in WRITES and res != LEASES)


def seconds(value: float | None) -> str:
    return f"{value:.1f} s" if value is not None else "n/a"


def verdict(value: float | None, target: float, form: str) -> str:
    """A figure against its target (at most `target`), saying plainly whether it is met."""
    if value is None:
        return "n/a"
    return form.format(value) + (": met" if value <= target else ": **NOT met**")


def summary(runs: list[Results]) -> list[str]:
    """Issue 9's (and 18's) targets, one column per API."""
    names = {"plane": "real control plane", "emulator": "API emulator"}
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, value: Callable[[Results], str]) -> None:
        rows.append((label, [value(r) for r in runs]))

    def create(r: Results) -> Phase:
        return r.phases[0]

    def children(r: Results) -> str:
        phase = create(r)
        return seconds(phase.seconds) if phase.seconds is not None else f"NOT ({phase.reached})"

    row(
        "requests per classifier, create (target <= 15)",
        lambda r: verdict(per_classifier(create(r).requests, r.classifiers), 15, "{:.1f}"),
    )
    row("all children exist, from the first create", children)
    row("bench's creates took", lambda r: seconds(create(r).sent_seconds))

    def after_creates(goal: str) -> Callable[[Results], str]:
        def value(r: Results) -> str:
            found = [p for p in r.phases if p.name == "create" and p.goal == goal]
            if not found or found[0].seconds is None:
                return "n/a" if not found else "NOT reached"
            return seconds(found[0].seconds - found[0].sent_seconds)

        return value

    row(
        "the operator made the last Deployment, after the last create",
        lambda r: seconds(r.last_deployment_made_s),
    )

    def pods_made(r: Results) -> str:
        if r.pods_made is None or r.last_pod_made_s is None:
            return "n/a"
        made, span = r.pods_made
        pace = f", {made / span:.1f} a second" if span > 0 else ""
        return f"{seconds(r.last_pod_made_s)} ({made} pods over {span:.1f} s{pace})"

    row("the controllers made the last pod, after the last create", pods_made)
    row(
        "the Deployment controller's last update of a Deployment, after the last create",
        lambda r: seconds(r.last_deployment_change_s),
    )
    row(
        "the scheduler marked the last pod, after the last create",
        after_creates("all pods marked Unschedulable by the scheduler"),
    )
    row(
        "the last status says Unschedulable, after the last create",
        after_creates("all statuses say Unschedulable"),
    )
    row(
        "last status write after the last create (target <= 60 s)",
        lambda r: verdict(create(r).last_status_write_s, 60, "{:.1f} s"),
    )
    row(
        f"writes once settled, {runs[0].idle_seconds:.0f} s (target 0)",
        lambda r: verdict(writes_of(r.idle), 0, "{}"),
    )
    row(
        "Lease renewals meanwhile (leader election)",
        lambda r: str(
            sum(c for (verb, res), c in r.idle.items() if res == LEASES and verb in WRITES)
        ),
    )
    row("operator RSS, peak", lambda r: f"{r.peak_rss_mb:.0f} MiB")
    header = "| figure | " + " | ".join(names[r.api] for r in runs) + " |"
    lines = [header, "|---|" + "---|" * len(runs)]
    lines += [f"| {label} | " + " | ".join(values) + " |" for label, values in rows]
    return lines


def render(runs: list[Results], command: str) -> str:
    n, namespaces = runs[0].classifiers, runs[0].namespaces
    lines = [
        f"## Operator: {n} ImageClassifiers on a real control plane and on the API emulator",
        "",
        f"Produced by `{command}`, all figures from one run on this machine "
        f"({os.cpu_count()} CPUs), {n} classifiers in {namespaces} namespaces, the real",
        "`kubeclassify-operator` process (kopf, cluster-wide) against each API in turn.",
        "",
        *summary(runs),
        "",
        "Where the requests went, and what changed (issue 9). Before 246ea25 every watch event",
        "of a child started a full pass (GET the classifier, Deployment, Service and HPA, LIST",
        "the pods, then the writes), one per event: on the real plane a new classifier's",
        "children send about 7 events (the echoes of the operator's own Deployment and Service",
        "creates, 2 or 3 Deployment status updates by its controller, the pod's creation and",
        "the scheduler marking it Unschedulable), so 7 passes and 44.6 requests per classifier",
        "(100 classifiers; the issue measured 45 at 500, with status writes until about 120 s).",
        "Now a pass records the resourceVersion of every child it read or wrote, and an event",
        "carrying a version already read starts nothing; the other child events start one pass",
        "2 s later that every change meanwhile joins; the HPA is looked up only when autoscaling",
        "is on or the HPA watch has seen one of ours; the pass that creates the Deployment does",
        "not list its pods (there are none yet). `tests/operator/test_plane_requests.py` checks",
        "this in the audit log (5 pod changes: one pass and no write; a new classifier: 2 to 4",
        "passes and 2 status writes).",
        "",
        "Since issue 18 every trigger goes through one pass queue (`passes.py`, in kopf's memo):",
        "at most one pass waits per classifier and one runs, in due order on a fixed number of",
        "workers; a failed pass gives its worker back and is due again after its backoff (the",
        "retries of all classifiers share one token bucket), where it used to sleep in kopf's",
        "executor holding the classifier's lock, and kopf's handlers wait for the queue instead",
        "of retrying on their own.",
        "",
        "And a pass now reads the children and pods from the copies kopf's watches keep (kopf",
        "indices, one per watched kind, updated before an event's handlers run; no handler runs",
        "before every watched kind is listed): a GET of the classifier is its only read once its",
        "children exist. A child the copies lack (one about to be created, a same-name stranger,",
        "one a pass has just created) is still read from the API server, as is one whose copy",
        "may be older than what a pass last read or wrote.",
        "",
    ]
    for results in runs:
        lines += render_one(results)
    return "\n".join(lines) + "\n"


def render_one(results: Results) -> list[str]:
    n = results.classifiers
    plane = results.api == "plane"
    server = "API server + etcd" if plane else "emulator"
    if plane:
        lines = [
            "### Real control plane",
            "",
            "Kubernetes v1.36 `kube-apiserver`, `kube-controller-manager` and `kube-scheduler`",
            "with etcd on loopback (`../shared/k8s`, started by `tests/support/control_plane.py`),",
            "no kubelet and no node: the Deployment controller makes a ReplicaSet and a pod per",
            "classifier, the scheduler marks each pod Unschedulable, and the status says so. The",
            "operator authenticates as deploy/'s ServiceAccount (a TokenRequest token; the API",
            "server enforces deploy/rbac.yaml) and elects itself leader in its Lease, as deploy/",
            "runs it. Its requests are counted from the API server's audit log (Metadata level,",
            "one entry per request, the ServiceAccount's username); the Lease's renewals (every",
            "2 s) are left out of the per-classifier figures and of the quiet detection.",
            "",
            "Phases: **create** posts the classifiers one after another (`spec: {replicas: 1}`);",
            f"**idle** changes nothing for {results.idle_seconds:.0f} s; **spec change** patches",
            "every classifier's spec at once (a new `env` entry: a new ReplicaSet and pod each).",
            "",
        ]
    else:
        lines = [
            "### API emulator",
            "",
            "kmock's Kubernetes API emulator (`tests/support/kube_emulator.py`) in the bench's own",
            "process, counting every request of the operator (standalone: kmock serves no",
            "Leases) by verb and resource; kmock's WATCH is one long request per resource.",
            "",
            "Phases: **create** as above; **available** writes what the deployment controller and",
            "a cloud load balancer would (each Deployment's status Available with its replicas",
            "ready, each Service's load-balancer address); **idle** changes nothing for "
            f"{results.idle_seconds:.0f} s;",
            "**spec change** as above.",
            "",
        ]
    lines += [
        "The bench watches ImageClassifiers, Deployments, Services and pods and times each goal",
        "to the watch event that met it for the last object (no polling); a phase's requests",
        "are those from its first write by the bench until the operator has been silent for",
        f"{QUIET_SECONDS:.0f} s; CPU is user + system time from `/proc` over that span.",
        "",
        "| phase | goal | time | bench's own writes took | operator's last request"
        f" | last status write after the bench's last write | operator CPU | {server} CPU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for phase in results.phases:
        time_ = f"{phase.seconds:.1f} s" if phase.seconds is not None else "NOT reached"
        if phase.seconds is None:
            time_ += f" ({phase.reached}/{n})"
        lines.append(
            f"| {phase.name} | {phase.goal} | {time_} | {phase.sent_seconds:.1f} s"
            f" | {phase.last_request_s:.1f} s | {seconds(phase.last_status_write_s)}"
            f" | {phase.operator_cores:.2f} cores | {phase.server_cores:.2f} cores |"
        )
    phases = list({phase.name: phase for phase in results.phases}.values())  # one per phase
    columns = [c for c in COLUMNS if any(v == c for p in phases for v, _ in p.requests)]
    lines += [
        "",
        "Requests of the operator per ImageClassifier, by verb"
        + (" (Lease renewals aside)" if plane else "")
        + ":",
        "",
        "| phase | " + " | ".join(columns) + " | total |",
        "|---|" + "---|" * (len(columns) + 1),
    ]
    for phase in phases:
        verbs: Counter[str] = Counter()
        for (verb, res), c in phase.requests.items():
            if res != LEASES:
                verbs[verb] += c
        lines.append(
            f"| {phase.name} | "
            + " | ".join(f"{verbs[verb] / n:.2f}" for verb in columns)
            + f" | {per_classifier(phase.requests, n):.2f} |"
        )
    lines += [
        "",
        "Watch events per ImageClassifier over each phase (what starts the operator's passes):",
        "",
        "| phase | kind | ADDED | MODIFIED | DELETED |",
        "|---|---|---|---|---|",
    ]
    by_phase_events = [(p.name, p.events) for p in phases] + [("idle", results.idle_events)]
    for name, events in by_phase_events:
        for kind in sorted({kind for kind, _ in events}):
            per_type = [events[kind, t] / n for t in ("ADDED", "MODIFIED", "DELETED")]
            lines.append(f"| {name} | {kind} | " + " | ".join(f"{c:.2f}" for c in per_type) + " |")
    leases = sum(c for (verb, res), c in results.idle.items() if res == LEASES and verb in WRITES)
    lines += [
        "",
        f"Steady state ({results.idle_seconds:.0f} s, nothing changing):",
        "",
        "| figure | value |",
        "|---|---|",
        f"| writes to classifiers, children or events | {writes_of(results.idle)} |",
        f"| Lease renewals (leader election) | {leases} |",
        f"| requests in total | {sum(results.idle.values())} |",
        f"| operator CPU | {results.idle_operator_cores:.3f} cores |",
        f"| {server} CPU | {results.idle_server_cores:.3f} cores |",
        "",
        "Operator memory:",
        "",
        "| when | RSS |",
        "|---|---|",
        *(f"| {when} | {mb:.0f} MiB |" for when, mb in results.rss_mb.items()),
        f"| peak (VmHWM) | {results.peak_rss_mb:.0f} MiB |",
        "",
        "Requests per ImageClassifier by resource (operator only):",
        "",
        "| phase | resource | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    by_phase = [(phase.name, phase.requests) for phase in phases] + [("idle", results.idle)]
    for name, counts in by_phase:
        for resource in sorted({res for _, res in counts}):
            row = [counts[verb, resource] / n for verb in columns]
            lines.append(f"| {name} | {resource} | " + " | ".join(f"{v:.2f}" for v in row) + " |")
    lines += [
        "",
        f"The operator's log had {results.log_lines} lines"
        + (
            f", {len(results.log_problems)} of them warnings or errors, e.g. "
            f"`{results.log_problems[0][:200]}`."
            if results.log_problems
            else ", none of them warnings or errors."
        ),
        "",
        "Caveats:",
        "",
        "- The machine was not otherwise idle (other sessions share its "
        f"{os.cpu_count()} CPUs): the 1-minute load average after each phase was "
        + ", ".join(f"{load:.1f}" for load in results.load)
        + "; times vary by tens of percent from run to run, request counts much less.",
    ]
    if plane:
        lines += [
            "- The API server, etcd, the controllers and the scheduler share those CPUs with the",
            "  operator and the bench. No kubelet: no pod runs, so no Deployment becomes",
            "  available and no status reaches Ready; with a kubelet, each pod would add a few",
            "  status changes (container statuses, readiness) and so a few passes.",
        ]
    else:
        lines += [
            "- The emulator is kmock, in Python, in the bench's process on the same CPUs: it",
            "  competes with the operator for the CPU and is far slower than a real API server",
            "  (it scans every stored object on each GET), so its times are an upper bound.",
            "- It runs no controllers and no garbage collection: no pods are created, no",
            "  Deployment rolls out (after the spec change the Deployments keep their old",
            "  status), and the operator's list of pods is always empty; the bench writes the",
            "  statuses above itself, once per object, where a real cluster writes several.",
            "- It does not validate, default or prune (no CRD schema) and has no resourceVersion",
            "  conflicts. kmock sends no watch BOOKMARK events; the bench makes it send one on",
            f"  every watch every {BOOKMARK_SECONDS:.0f} s, as an API server does (kopf takes a",
            "  watch quiet for 70 s for dead and reconnects).",
        ]
    lines.append("")
    return lines


def log_problems(log_path: Path) -> tuple[int, list[str]]:
    """The operator's log lines at WARNING or above (kopf logs retries and errors there),
    up to its shutdown (cancelling handlers on SIGTERM warns too)."""
    lines = log_path.read_text(errors="replace").splitlines()
    running = lines[: next((i for i, line in enumerate(lines) if "Signal SIGTERM" in line), None)]
    pattern = re.compile(r"\[(WARNING|ERROR|CRITICAL)|^Traceback")
    return len(lines), [line for line in running if pattern.search(line)]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--api",
        choices=("both", "plane", "emulator"),
        default="both",
        help="the real control plane (../shared/k8s), kmock's emulator, or both in turn",
    )
    parser.add_argument("--classifiers", type=int, default=500)
    parser.add_argument("--namespaces", type=int, default=10)
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument(
        "--timeout", type=float, default=300, help="give up on a phase after this many seconds"
    )
    parser.add_argument("--no-write", action="store_true", help="do not update the doc")
    parser.add_argument("--log", type=Path, help="keep the operator's logs in this directory")
    parser.add_argument("--verbose", action="store_true", help="the operator logs at debug level")
    return parser.parse_args()


def measure(
    api: str,
    url: str,
    auth: Auth,
    counts: Counts,
    server: list[Proc],
    kubeconfig: Path,
    operator_args: list[str],
    keys: list[Key],
    args: argparse.Namespace,
    log_dir: Path,
) -> Results:
    """Start the operator, run the phases, stop it."""
    results = Results(api, args.classifiers, args.namespaces, args.idle_seconds)
    log_path = log_dir / f"operator-{api}.log"
    watches = Watches.start(url, auth)
    if args.verbose:
        operator_args.append("--verbose")
    process, _ = start_operator(kubeconfig, log_path, *operator_args)
    try:
        wait_quiet(counts, 60)  # startup: discovery, the first listings
        bench = Bench(url, auth, counts, watches, Proc.of(process.pid), server)
        run(bench, keys, results, args.timeout)
        results.load = bench.load
    finally:
        if process.poll() is not None:
            print(f"the operator exited early:\n{log_path.read_text()[-5000:]}", file=sys.stderr)
        stop_operator(process)
        watches.stop()
        results.log_lines, results.log_problems = log_problems(log_path)
    return results


def on_emulator(keys: list[Key], args: argparse.Namespace, log_dir: Path) -> Results:
    thread = EmulatorThread(CountingEmulator)
    thread.start_and_wait()
    assert isinstance(thread.emulator, CountingEmulator) and thread.native_id is not None
    try:
        kubeconfig = write_kubeconfig(log_dir / "emulator.kubeconfig", thread.url)
        server = [Proc.of(os.getpid(), thread.native_id)]
        # Standalone: kmock serves no Leases to elect a leader in.
        return measure(
            "emulator",
            thread.url,
            {},
            thread.emulator,
            server,
            kubeconfig,
            ["--standalone"],
            keys,
            args,
            log_dir,
        )
    finally:
        thread.stop()


def on_plane(keys: list[Key], args: argparse.Namespace, log_dir: Path) -> Results:
    """A plane of its own (or the one KUBECLASSIFY_K8S_RUN names, whose bench namespaces are
    deleted afterwards), with deploy/ installed."""
    reuse = os.environ.get(RUN_ENV)
    plane = ControlPlane.attach(Path(reuse)) if reuse else ControlPlane.start()
    try:
        plane.install()
        for namespace in sorted({namespace for namespace, _ in keys}):
            plane.kubectl("create", "namespace", namespace)
        kubeconfig = plane.token_kubeconfig(
            log_dir / "plane.kubeconfig", OPERATOR_SA, OPERATOR_NAMESPACE
        )
        counts = AuditCounts(plane.audit_log)
        counts.start()
        pids = plane.run_dir / "pids"
        server = [Proc.of(int((pids / f"{c}.pid").read_text())) for c in ("kube-apiserver", "etcd")]
        auth: Auth = {"cert": plane.admin_cert, "verify": str(plane.ca_cert)}
        return measure(
            "plane", plane.url, auth, counts, server, kubeconfig, [], keys, args, log_dir
        )
    finally:
        if plane.owned:
            plane.down()
        else:
            for namespace in sorted({namespace for namespace, _ in keys}):
                plane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def main() -> None:
    args = parse_args()
    command = "python bench/operator_scale.py" + "".join(
        f" --{flag} {value}"
        for flag, value, default in (
            ("api", args.api, "both"),
            ("classifiers", args.classifiers, 500),
            ("namespaces", args.namespaces, 10),
            ("idle-seconds", f"{args.idle_seconds:g}", "60"),
        )
        if value != default
    )
    apis = ("plane", "emulator") if args.api == "both" else (args.api,)
    runs = []
    with tempfile.TemporaryDirectory(prefix="operator-scale-") as tmp:
        log_dir = args.log or Path(tmp)
        log_dir.mkdir(parents=True, exist_ok=True)
        for api in apis:
            prefix = (
                f"bench-{os.getpid()}" if api == "plane" and os.environ.get(RUN_ENV) else "bench"
            )
            keys = [
                (f"{prefix}-{i % args.namespaces}", f"ic-{i:04d}") for i in range(args.classifiers)
            ]
            run_on = on_plane if api == "plane" else on_emulator
            runs.append(run_on(keys, args, log_dir))
    markdown = render(runs, command)
    print(markdown)
    if not args.no_write:
        write_section("operator_scale", markdown)


if __name__ == "__main__":
    main()
