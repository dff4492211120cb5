"""Scale benchmark of the operator: the real `kubeclassify-operator` process against kmock's API
emulator, with hundreds of ImageClassifiers (issue 4).

Phases: create them all; let the "cluster" report the Deployments available and the load
balancers assigned (the bench writes those statuses, as the controllers would); stay idle; then
change every spec at once. The emulator counts the operator's requests by verb and resource;
the operator's CPU and memory come from /proc. The bench watches the API (no polling) to time
each phase. Everything runs on loopback and stops by itself. Writes its section of
docs/benchmarks.md.

Run: python bench/operator_scale.py [--classifiers 500] [--namespaces 10] [--idle-seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
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
# The emulator's RBAC verbs, shown as the HTTP requests they were.
HTTP_VERBS = {
    "get": "GET",
    "list": "LIST",
    "watch": "WATCH",
    "create": "POST",
    "patch": "PATCH",
    "delete": "DELETE",
}
COLUMNS = ("GET", "LIST", "WATCH", "POST", "PATCH", "DELETE")
WRITES = frozenset({"POST", "PATCH", "DELETE", "PUT"})
PEERING = "clusterkopfpeerings"  # kopf's heartbeat lives here: a write by design, once a minute
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BOOKMARK_SECONDS = 30.0  # a real API server sends one about every minute
QUIET_SECONDS = 3.0  # a phase is over once the operator has sent nothing for this long
Key = tuple[str, str]  # (namespace, name)
Test = Callable[[dict[str, Any]], bool]
Goal = tuple[str, list[tuple["Watch", Test]]]  # what must hold, for every object of each watch


class CountingEmulator(ApiServerEmulator):
    """The shared emulator, counting requests by (verb, resource) instead of logging them.

    Only counters are kept, so memory stays flat (the shared call journal is switched off).
    """

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.record_calls = False
        self.counts: Counter[tuple[str, str]] = Counter()
        self.counts_lock = threading.Lock()
        self.last_request = time.monotonic()  # of the operator's latest request
        self.bookmarks: asyncio.Task[None] | None = None

    async def _handle(self, request: rendering.Request) -> Any:
        if self.bookmarks is None:
            self.bookmarks = asyncio.get_running_loop().create_task(self._send_bookmarks())
        if request.headers.get("User-Agent") != BENCH_AGENT:
            call = call_of(request)
            verb, resource = (
                (HTTP_VERBS[call.verb], call.resource) if call else ("GET", "discovery")
            )
            with self.counts_lock:
                self.counts[verb, resource] += 1
                self.last_request = time.monotonic()
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

    def snapshot(self) -> Counter[tuple[str, str]]:
        with self.counts_lock:
            return Counter(self.counts)


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

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.objects: dict[Key, dict[str, Any]] = {}
        self.trackers: list[Tracker] = []
        self.lock = threading.Lock()
        self.started_streaming = threading.Event()

    def run(self) -> None:
        headers = {"User-Agent": BENCH_AGENT}
        params = {"watch": "true"}
        with requests.get(self.url, params=params, headers=headers, stream=True, timeout=None) as r:
            self.started_streaming.set()
            for line in r.iter_lines(chunk_size=None):
                if line:
                    self._seen(json.loads(line))

    def _seen(self, event: dict[str, Any]) -> None:
        obj = event.get("object")
        if event.get("type") not in ("ADDED", "MODIFIED", "DELETED") or not obj:
            return  # ERROR or BOOKMARK
        key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        now = time.monotonic()
        with self.lock:
            if event["type"] == "DELETED":
                self.objects.pop(key, None)
                return
            self.objects[key] = obj
            for tracker in self.trackers:
                if key not in tracker.done and tracker.test(obj):
                    tracker.done[key] = now

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


@dataclass
class Watches:
    classifiers: Watch
    deployments: Watch
    services: Watch

    @classmethod
    def start(cls, url: str) -> Watches:
        watches = cls(
            Watch(f"{url}{IC_PATH}/imageclassifiers"),
            Watch(f"{url}/apis/apps/v1/deployments"),
            Watch(f"{url}/api/v1/services"),
        )
        for watch in watches.all():
            watch.start()
            assert watch.started_streaming.wait(10), f"cannot watch {watch.url}"
        return watches

    def all(self) -> tuple[Watch, Watch, Watch]:
        return self.classifiers, self.deployments, self.services


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


def wait_quiet(emulator: CountingEmulator, limit: float) -> float:
    """Wait until the operator has been silent for QUIET_SECONDS; return its last request time."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        silent = time.monotonic() - emulator.last_request
        if silent >= QUIET_SECONDS:
            break
        time.sleep(QUIET_SECONDS - silent)
    return emulator.last_request


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


def start_operator(kubeconfig: Path, log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The installed console command, cluster-wide; standalone (kmock serves no Leases)."""
    command = shutil.which("kubeclassify-operator", path=str(Path(sys.executable).parent))
    if not command:
        sys.exit("install the operator first: make install-dev")
    liveness = f"http://127.0.0.1:{free_port()}/healthz"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "POD_ID": "bench-operator"}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [command, "--standalone", "--liveness", liveness],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
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
    sys.exit(f"the operator did not become live in 60 s:\n{log_path.read_text()}")


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
    sent_seconds: float  # how long the bench took to send its own writes
    last_request_s: float  # the operator's last request of the phase, from the phase start
    operator_cores: float  # CPU over the phase (until silent)
    emulator_cores: float

    def by_verb(self) -> Counter[str]:
        verbs: Counter[str] = Counter()
        for (verb, _), n in self.requests.items():
            verbs[verb] += n
        return verbs


@dataclass
class Results:
    classifiers: int
    namespaces: int
    idle_seconds: float
    command: str
    phases: list[Phase] = field(default_factory=list)
    idle: Counter[tuple[str, str]] = field(default_factory=Counter)
    idle_operator_cores: float = 0.0
    idle_emulator_cores: float = 0.0
    rss_mb: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: float = 0.0
    load: list[float] = field(default_factory=list)  # 1-min load average through the run
    log_lines: int = 0
    log_problems: list[str] = field(default_factory=list)


@dataclass
class Bench:
    """What the phases drive and measure."""

    url: str
    emulator: CountingEmulator
    watches: Watches
    operator: Proc
    emulator_thread: Proc
    session: requests.Session = field(default_factory=requests.Session)
    load: list[float] = field(default_factory=list)  # the 1-min load average after each phase

    def __post_init__(self) -> None:
        self.session.headers["User-Agent"] = BENCH_AGENT

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
        before = self.emulator.snapshot()
        cpu = self.operator.cpu_seconds(), self.emulator_thread.cpu_seconds()
        started = time.monotonic()
        writes()
        sent = time.monotonic() - started
        timed = []
        for goal, tests in goals:
            seconds, reached = wait_all(tests, count, started, timeout)
            done = f"{seconds:.1f} s" if seconds is not None else f"NOT reached ({reached}/{count})"
            print(f"{name}: {goal}: {done}; bench writes took {sent:.1f} s", flush=True)
            timed.append((goal, seconds, reached))
        last = wait_quiet(self.emulator, timeout)
        elapsed = time.monotonic() - started
        operator_cores = (self.operator.cpu_seconds() - cpu[0]) / elapsed
        emulator_cores = (self.emulator_thread.cpu_seconds() - cpu[1]) / elapsed
        counts = self.emulator.snapshot()
        counts.subtract(before)
        self.load.append(os.getloadavg()[0])
        return [
            Phase(
                name,
                goal,
                seconds,
                reached,
                +counts,
                sent,
                last - started,
                operator_cores,
                emulator_cores,
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

    results.phases += bench.phase(
        "create",
        create,
        [
            (
                "all Deployments and Services exist",
                [(watches.deployments, exists), (watches.services, exists)],
            ),
            ("all statuses written", [(watches.classifiers, observed(1))]),
        ],
        n,
        timeout,
    )
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

    results.phases += bench.phase(
        "available",
        report_available,
        [("all Ready=True", [(watches.classifiers, ready)])],
        n,
        timeout,
    )

    # Steady state: nothing changes; the operator should only hold its watches and heartbeat.
    before = bench.emulator.snapshot()
    cpu_before = bench.operator.cpu_seconds()
    emulator_before = bench.emulator_thread.cpu_seconds()
    started = time.monotonic()
    time.sleep(results.idle_seconds)
    elapsed = time.monotonic() - started
    results.idle_operator_cores = (bench.operator.cpu_seconds() - cpu_before) / elapsed
    results.idle_emulator_cores = (bench.emulator_thread.cpu_seconds() - emulator_before) / elapsed
    idle = bench.emulator.snapshot()
    idle.subtract(before)
    results.idle = +idle
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


def render(results: Results) -> str:
    n = results.classifiers
    lines = [
        f"## Operator: {n} ImageClassifiers against the API emulator",
        "",
        f"Produced by `{results.command}`, all figures from one run on this machine "
        f"({os.cpu_count()} CPUs). The real `kubeclassify-operator` process (kopf, cluster-wide,",
        "with peering, as `deploy/` runs it) talks over loopback HTTP to kmock's Kubernetes API",
        "emulator (`tests/support/kube_emulator.py`) running in the bench's own process. "
        f"{n} classifiers in {results.namespaces} namespaces.",
        "",
        "How it is measured:",
        "",
        "- the emulator counts every request of the operator by verb and resource (the bench's",
        "  own requests are left out); kmock's WATCH is one long request per watched resource;",
        "- the bench watches ImageClassifiers, Deployments and Services and times each goal to the",
        "  watch event that met it for the last object (no polling);",
        "- a phase's requests are those from its first write by the bench until the operator has",
        f"  been silent for {QUIET_SECONDS:.0f} s;",
        "- CPU is user + system time from `/proc/<pid>/stat` (operator) and",
        "  `/proc/self/task/<tid>/stat` (the emulator's thread); memory is `VmRSS` / `VmHWM`.",
        "",
        "Phases: **create** posts the classifiers one after another (`spec: {replicas: 1}`);",
        "**available** writes what the deployment controller and a cloud load balancer would",
        "(each Deployment's status Available with its replicas ready, each Service's",
        "load-balancer address); **idle** changes nothing for "
        f"{results.idle_seconds:.0f} s; **spec change** patches every classifier's",
        "spec at once (a new `env` entry, so every Deployment's pod template must change).",
        "",
        "| phase | goal | time | bench's own writes took | operator's last request"
        " | operator CPU | emulator CPU |",
        "|---|---|---|---|---|---|---|",
    ]
    for phase in results.phases:
        time_ = f"{phase.seconds:.1f} s" if phase.seconds is not None else "NOT reached"
        if phase.seconds is None:
            time_ += f" ({phase.reached}/{n})"
        lines.append(
            f"| {phase.name} | {phase.goal} | {time_} | {phase.sent_seconds:.1f} s"
            f" | {phase.last_request_s:.1f} s | {phase.operator_cores:.2f} cores"
            f" | {phase.emulator_cores:.2f} cores |"
        )
    phases = list({phase.name: phase for phase in results.phases}.values())  # one per phase
    lines += [
        "",
        "Times run from the bench's first write of the phase; the operator's last request is",
        f"followed by {QUIET_SECONDS:.0f} s of silence; CPU is averaged over that span.",
        "",
        "Requests of the operator per ImageClassifier, by verb:",
        "",
        "| phase | " + " | ".join(COLUMNS) + " | total |",
        "|---|" + "---|" * (len(COLUMNS) + 1),
    ]
    for phase in phases:
        verbs = phase.by_verb()
        lines.append(
            f"| {phase.name} | "
            + " | ".join(f"{verbs[verb] / n:.2f}" for verb in COLUMNS)
            + f" | {sum(verbs.values()) / n:.2f} |"
        )
    idle_writes = sum(c for (verb, _), c in results.idle.items() if verb in WRITES)
    heartbeats = sum(
        c for (verb, res), c in results.idle.items() if verb in WRITES and res.startswith(PEERING)
    )
    lines += [
        "",
        f"Steady state ({results.idle_seconds:.0f} s, nothing changing):",
        "",
        "| figure | value |",
        "|---|---|",
        f"| writes (POST/PATCH/DELETE), all | {idle_writes} |",
        f"| of which kopf's peering heartbeat | {heartbeats} |",
        f"| writes to classifiers, children or events | {idle_writes - heartbeats} |",
        f"| requests in total | {sum(results.idle.values())} |",
        f"| operator CPU | {results.idle_operator_cores:.3f} cores |",
        f"| emulator CPU (its thread) | {results.idle_emulator_cores:.3f} cores |",
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
        "| phase | resource | " + " | ".join(COLUMNS) + " |",
        "|---|---|" + "---|" * len(COLUMNS),
    ]
    by_phase = [(phase.name, phase.requests) for phase in phases] + [("idle", results.idle)]
    for name, counts in by_phase:
        for resource in sorted({res for _, res in counts}):
            row = [counts[verb, resource] / n for verb in COLUMNS]
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
        "- The machine was not otherwise idle: the 1-minute load average after create, available"
        " and spec change was "
        + ", ".join(f"{load:.1f}" for load in results.load)
        + f" (on {os.cpu_count()} CPUs); times vary by tens of percent from run to run.",
        "- The emulator is kmock, in Python, in the bench's process on the same "
        f"{os.cpu_count()} cores:",
        "  it competes with the operator for the CPU, and it is far slower than a real API server",
        "  (it scans every stored object on each GET), so the times are an upper bound for the",
        "  operator's own latency, not what a real cluster would show. The request counts do not",
        "  depend on that.",
        "- The emulator runs no controllers and no garbage collection: no pods are created, no",
        "  Deployment rolls out (after the spec change the Deployments keep their old status),",
        "  and the operator's list of pods is always empty; the bench writes the statuses above",
        "  itself, once per object, where a real cluster writes several as pods start.",
        "- It does not validate, default or prune (no CRD schema) and has no resourceVersion",
        "  conflicts. kmock sends no watch BOOKMARK events; the bench makes it send one on every",
        f"  watch every {BOOKMARK_SECONDS:.0f} s, as an API server does (kopf takes a watch quiet",
        "  for 70 s for dead and reconnects). On a reconnect kmock replays every object, as a",
        "  real API server does after a `410 Gone` re-list; the operator skips children whose",
        "  resourceVersion it has already reconciled, so that costs no pass. (Before that check,",
        "  each reconnect cost one full pass per child, and at 500 classifiers the operator never",
        "  went quiet. Checked once without bookmarks, 100 classifiers, 150 s idle: 15 requests,",
        "  the re-watches and kopf's heartbeats, and no pass.)",
    ]
    return "\n".join(lines) + "\n"


def log_problems(log_path: Path) -> tuple[int, list[str]]:
    """The operator's log lines at WARNING or above (kopf logs retries and errors there),
    up to its shutdown (cancelling handlers on SIGTERM warns too)."""
    lines = log_path.read_text(errors="replace").splitlines()
    running = lines[: next((i for i, line in enumerate(lines) if "Signal SIGTERM" in line), None)]
    pattern = re.compile(r"\[(WARNING|ERROR|CRITICAL)|^Traceback")
    return len(lines), [line for line in running if pattern.search(line)]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classifiers", type=int, default=500)
    parser.add_argument("--namespaces", type=int, default=10)
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument(
        "--timeout", type=float, default=240, help="give up on a phase after this many seconds"
    )
    parser.add_argument("--no-write", action="store_true", help="do not update the doc")
    parser.add_argument("--log", type=Path, help="keep the operator's log in this file")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    command = "python bench/operator_scale.py" + "".join(
        f" --{flag} {value}"
        for flag, value, default in (
            ("classifiers", args.classifiers, 500),
            ("namespaces", args.namespaces, 10),
            ("idle-seconds", f"{args.idle_seconds:g}", "60"),
        )
        if value != default
    )
    keys = [(f"bench-{i % args.namespaces}", f"ic-{i:04d}") for i in range(args.classifiers)]
    results = Results(args.classifiers, args.namespaces, args.idle_seconds, command)
    thread = EmulatorThread(CountingEmulator)
    thread.start_and_wait()
    assert isinstance(thread.emulator, CountingEmulator) and thread.native_id is not None
    emulator = thread.emulator
    with tempfile.TemporaryDirectory(prefix="operator-scale-") as tmp:
        kubeconfig = write_kubeconfig(Path(tmp) / "kubeconfig", thread.url)
        log_path = args.log or Path(tmp) / "operator.log"
        watches = Watches.start(thread.url)
        process, _ = start_operator(kubeconfig, log_path)
        try:
            wait_quiet(emulator, 60)  # startup: peering, discovery, the first listings
            bench = Bench(
                thread.url,
                emulator,
                watches,
                Proc.of(process.pid),
                Proc.of(os.getpid(), thread.native_id),
            )
            run(bench, keys, results, args.timeout)
            results.load = bench.load
        finally:
            if process.poll() is not None:
                print(
                    f"the operator exited early:\n{log_path.read_text()[-5000:]}", file=sys.stderr
                )
            stop_operator(process)
            results.log_lines, results.log_problems = log_problems(log_path)
            thread.stop()
    markdown = render(results)
    print(markdown)
    if not args.no_write:
        write_section("operator_scale", markdown)


if __name__ == "__main__":
    main()
