"""kmock's Kubernetes API emulator, served over real HTTP from a background thread.

Shared by the operator tests and the operator scale benchmark.
"""

import asyncio
import datetime
import itertools
import threading
import uuid
from pathlib import Path
from typing import Any

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
    "kopf.dev/v1/clusterkopfpeerings": kmock.ResourceInfo(
        kind="ClusterKopfPeering", namespaced=False
    ),
}
for info in RESOURCES.values():
    info.verbs = {"get", "list", "watch", "create", "patch", "delete"}


class ApiServerEmulator(kmock.KubernetesEmulator):
    """kmock's emulator plus the metadata an API server assigns on writes.

    kmock stores objects verbatim; a real API server also fills in `generateName` (kopf's
    Events rely on it), `uid` (owner references point to it) and bumps `generation` when
    the spec changes (observedGeneration reports it).

    It also forgets the request log (the tests assert on objects, not requests): kmock's
    per-request cost grows with the log, and the operator makes thousands of requests.
    """

    _serial = itertools.count(1)

    async def _handle(self, request: rendering.Request) -> Any:
        del self._requests[:-1]
        data = request.data
        if request.resource is not None and isinstance(data, dict):
            meta = data.setdefault("metadata", {})
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


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EmulatorThread(threading.Thread):
    """Runs the emulator's HTTP server on its own event loop, so tests stay synchronous."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.url = ""
        self.emulator: ApiServerEmulator | None = None
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop_event: asyncio.Event | None = None

    def run(self) -> None:
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop_event = asyncio.Event()
        async with ApiServerEmulator() as emulator, kmock.Server(emulator) as server:
            for resource, info in RESOURCES.items():
                emulator.resources[resource] = info
            self.emulator = emulator
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop_event.wait()

    def start_and_wait(self) -> None:
        self.start()
        assert self._ready.wait(10), "the emulator did not start"

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
