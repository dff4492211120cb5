"""kmock's Kubernetes API emulator, served over real HTTP from a background thread.

Shared by the operator tests and the operator scale benchmark. Besides serving objects, it
records who called what (`calls`, for RBAC and write counting) and can misbehave on purpose
(`faults`): refuse requests with an HTTP status, end watches with 410 Gone, answer slowly,
hold a request until the test releases it, or cut the open watch streams.
"""

import asyncio
import datetime
import itertools
import json
import re
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp.web
import kmock
import yaml
from kmock._internal import enums, rendering
from kubeclassify_operator.spec import GROUP, KIND, PLURAL, VERSION

IC_PATH = f"/apis/{GROUP}/{VERSION}"
RESOURCES: dict[str, kmock.ResourceInfo] = {
    f"{GROUP}/{VERSION}/{PLURAL}": kmock.ResourceInfo(
        kind=KIND,
        namespaced=True,
        verbs={"get", "list", "watch", "create", "patch", "delete"},
        subresources={"status", "scale"},
        shortnames={"ic"},
    ),
    "apps/v1/deployments": kmock.ResourceInfo(kind="Deployment", namespaced=True),
    "v1/services": kmock.ResourceInfo(kind="Service", namespaced=True),
    "v1/pods": kmock.ResourceInfo(kind="Pod", namespaced=True),
    "v1/events": kmock.ResourceInfo(kind="Event", namespaced=True),
    # kopf waits for namespaces to be served even when it watches the whole cluster.
    "v1/namespaces": kmock.ResourceInfo(kind="Namespace", namespaced=False),
    "autoscaling/v2/horizontalpodautoscalers": kmock.ResourceInfo(
        kind="HorizontalPodAutoscaler", namespaced=True
    ),
    "apiextensions.k8s.io/v1/customresourcedefinitions": kmock.ResourceInfo(
        kind="CustomResourceDefinition", namespaced=False
    ),
}
for info in RESOURCES.values():
    info.verbs = {"get", "list", "watch", "create", "patch", "delete"}


# What the API server's authorizer calls each kmock action (PUT would be "update"; no one uses it).
VERBS = {
    enums.action.LIST: "list",
    enums.action.WATCH: "watch",
    enums.action.FETCH: "get",
    enums.action.CREATE: "create",
    enums.action.UPDATE: "patch",
    enums.action.DELETE: "delete",
}
WRITE_VERBS = {"create", "patch", "update", "delete"}


@dataclass(frozen=True)
class Call:
    """One resource request, as RBAC sees it (`resource` includes a subresource: `x/status`)."""

    agent: str  # the User-Agent: "kopf/...", "kubeclassify-operator/...", "kubectl/..."
    verb: str
    group: str
    resource: str
    namespace: str | None
    name: str | None

    @property
    def is_write(self) -> bool:
        return self.verb in WRITE_VERBS


@dataclass
class Fault:
    """Misbehave on the next `times` calls with this verb whose path matches `path` (re.search)
    and whose User-Agent starts with `agent`.

    `status` answers with that HTTP status (and `Retry-After` when set) instead of serving,
    without touching any object; a watch "answered" 410 gets a 200 stream holding one 410
    ERROR event, as an API server does for an expired resourceVersion. `status=0` serves the
    request normally after the `delay` and/or the `hold`: the request waits until the test sets
    `hold`. `hits` counts the calls caught; `finished` those fully answered.
    """

    verb: str
    path: str
    agent: str = ""
    status: int = 0
    times: int = 1
    retry_after: int | None = None
    delay: float = 0.0
    hold: threading.Event | None = None
    hits: int = 0
    finished: int = 0

    def catches(self, call: Call, path: str) -> bool:
        return (
            self.hits < self.times
            and call.verb == self.verb
            and call.agent.startswith(self.agent)
            and bool(re.search(self.path, path))
        )


class ApiServerEmulator(kmock.KubernetesEmulator):
    """kmock's emulator plus the metadata an API server assigns on writes.

    kmock stores objects verbatim; a real API server also fills in `generateName` (kopf's
    Events rely on it), `uid` (owner references point to it), a new `resourceVersion` on
    every write (kopf uses it to skip the stale events its own patches overtook) and bumps
    `generation` when the spec changes (observedGeneration reports it).

    It also keeps only the requests in flight in kmock's request log (kmock's per-request
    cost grows with it, and the operator makes thousands of requests), and the small `calls`
    journal instead.
    """

    _serial = itertools.count(1)
    _versions = itertools.count(1)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.calls: list[Call] = []
        self.record_calls = True  # a long benchmark may switch the journal off to stay flat
        self.faults: list[Fault] = []
        self._in_flight: dict[int, rendering.Request] = {}  # by id(), like _watches
        self._watches: dict[int, aiohttp.web.BaseRequest] = {}  # by id(): requests are unhashable

    async def _handle(self, request: rendering.Request) -> Any:
        # kmock matches a request by finding it in its log: keep exactly the ones in flight.
        self._in_flight[id(request)] = request
        self._requests[:] = self._in_flight.values()
        try:
            return await self._answer(request)
        finally:
            del self._in_flight[id(request)]

    async def _answer(self, request: rendering.Request) -> Any:
        call = call_of(request)
        if call is None:  # discovery (/api, /apis/...): not a resource request
            return await self._serve(request)
        if self.record_calls:
            self.calls.append(call)
        fault = next((f for f in self.faults if f.catches(call, request.url.path)), None)
        if fault is None:
            return await self._serve(request)
        fault.hits += 1
        try:
            return await self._misbehave(fault, request)
        finally:
            fault.finished += 1

    async def _misbehave(self, fault: Fault, request: rendering.Request) -> Any:
        await asyncio.sleep(fault.delay)
        while fault.hold is not None and not fault.hold.is_set():
            await asyncio.sleep(0.02)
        if not fault.status:
            return await self._serve(request)
        status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": fault.status}
        if fault.status == 410 and request.action == enums.action.WATCH:
            assert request._raw_request is not None
            stream = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
            await stream.prepare(request._raw_request)
            await stream.write(json.dumps({"type": "ERROR", "object": status}).encode() + b"\n")
            await stream.write_eof()
            return stream
        headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else {}
        return aiohttp.web.json_response(
            {**status, "reason": "InjectedFault", "message": "injected by the test"},
            status=fault.status,
            headers=headers,
        )

    def drop_watches(self) -> int:
        """Cut every open watch stream, as a network blip or an API server restart would."""
        for raw in self._watches.values():
            if raw.transport is not None:
                raw.transport.close()
        return len(self._watches)

    async def _serve(self, request: rendering.Request) -> Any:
        raw = request._raw_request
        if request.action != enums.action.WATCH or raw is None:
            return await self._store(request)
        self._watches[id(raw)] = raw
        try:
            return await self._store(request)
        finally:
            del self._watches[id(raw)]

    async def _store(self, request: rendering.Request) -> Any:
        data = request.data
        if request.resource is not None and isinstance(data, dict):
            meta = data.setdefault("metadata", {})
            if request.action in (enums.action.CREATE, enums.action.UPDATE):
                meta["resourceVersion"] = str(next(self._versions))
            if request.action == enums.action.CREATE:
                if not meta.get("name") and meta.get("generateName"):
                    meta["name"] = f"{meta['generateName']}{next(self._serial)}"
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("generation", 1)
                meta.setdefault("creationTimestamp", _now())
            elif request.action == enums.action.UPDATE and "spec" in data and request.name:
                key = (request.resource, request.namespace, request.name)
                if request.subresource is None and key in self.objects:
                    old = self.objects[key]
                    if not old.deleted:
                        meta["generation"] = old.get("metadata", {}).get("generation", 1) + 1
        return await super()._handle(request)


def call_of(request: rendering.Request) -> Call | None:
    """The request as RBAC sees it; None for discovery (`/api`, `/apis/...`)."""
    resource = request.resource
    if resource is None or not resource.plural or request.action is None:
        return None
    plural = f"{resource.plural}/{request.subresource}" if request.subresource else resource.plural
    return Call(
        agent=request.headers.get("User-Agent", ""),
        verb=VERBS[request.action],
        group=str(resource.group or ""),
        resource=plural,
        namespace=request.namespace,
        name=request.name,
    )


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EmulatorThread(threading.Thread):
    """Runs the emulator's HTTP server on its own event loop, so tests stay synchronous."""

    def __init__(self, emulator_class: type[ApiServerEmulator] = ApiServerEmulator) -> None:
        super().__init__(daemon=True)
        self.url = ""
        self.emulator_class = emulator_class
        self.emulator: ApiServerEmulator | None = None
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop_event: asyncio.Event | None = None

    def run(self) -> None:
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop_event = asyncio.Event()
        async with self.emulator_class() as emulator, kmock.Server(emulator) as server:
            for resource, info in RESOURCES.items():
                emulator.resources[resource] = info
            self.emulator = emulator
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop_event.wait()

    def start_and_wait(self) -> None:
        self.start()
        assert self._ready.wait(10), "the emulator did not start"

    def drop_watches(self) -> int:
        """Cut the open watch streams (on the emulator's loop); returns how many were cut."""

        async def drop() -> int:
            assert self.emulator is not None
            return self.emulator.drop_watches()

        return asyncio.run_coroutine_threadsafe(drop(), self._loop).result(5)

    def stop(self) -> None:
        if self._stop_event is not None:
            self._loop.call_soon_threadsafe(self._stop_event.set)
        self.join(10)


def write_kubeconfig(path: Path, server_url: str) -> Path:
    """A kubeconfig for the emulator, as kubectl and the operator read it."""
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "emulator", "cluster": {"server": server_url}}],
                "users": [{"name": "tester", "user": {"token": "test-token"}}],
                "contexts": [
                    {"name": "emulator", "context": {"cluster": "emulator", "user": "tester"}}
                ],
                "current-context": "emulator",
            }
        )
    )
    return path
