"""A small JSON-in, JSON-out Kubernetes client on top of the official client's auth and transport.

The typed models of the official client get in the way of comparing manifests as dicts, so
this speaks plain JSON with JSON merge patches, which every resource supports.
"""

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import kubernetes
import urllib3
from kubernetes.client import ApiClient, Configuration
from kubernetes.client.exceptions import ApiException

from kubeclassify_operator.spec import GROUP, PLURAL, VERSION

MERGE_PATCH = "application/merge-patch+json"
USER_AGENT = "kubeclassify-operator"
# (connect, read) seconds: a stalled API server must fail the call, not block the pass forever.
REQUEST_TIMEOUT = (5.0, 30.0)


@dataclass(frozen=True)
class Kind:
    """Where a namespaced resource lives in the API (and what kopf and RBAC rules call it)."""

    group: str  # "" for the core API
    version: str
    plural: str

    @property
    def prefix(self) -> str:
        """/api/v1 for the core API, else /apis/<group>/<version>."""
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    def path(self, namespace: str, name: str | None = None, sub: str | None = None) -> str:
        path = f"{self.prefix}/namespaces/{namespace}/{self.plural}"
        if name:
            path += f"/{name}"
        if sub:
            path += f"/{sub}"
        return path


DEPLOYMENTS = Kind("apps", "v1", "deployments")
SERVICES = Kind("", "v1", "services")
HPAS = Kind("autoscaling", "v2", "horizontalpodautoscalers")
PODS = Kind("", "v1", "pods")
EVENTS = Kind("", "v1", "events")
CLASSIFIERS = Kind(GROUP, VERSION, PLURAL)
# The Gateway API's (issue 20): a CRD many clusters do not have (see Kube.serves).
HTTPROUTES = Kind("gateway.networking.k8s.io", "v1", "httproutes")


def load_config(retries: int | None = None) -> ApiClient:
    """In-cluster credentials when running in a pod, else the kubeconfig (KUBECONFIG honoured).

    `retries`: urllib3's silent retries of a call (its default when None); a caller with a
    deadline of its own passes 0, as every retry costs another full timeout.
    """
    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
    config = Configuration.get_default_copy()
    config.retries = retries
    api = ApiClient(config)
    api.user_agent = USER_AGENT  # tells its requests from kopf's in audit logs (and tests)
    return api


class Kube:
    def __init__(self, api: ApiClient) -> None:
        self.api = api

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
        timeout: tuple[float, float] = REQUEST_TIMEOUT,
    ) -> dict[str, Any] | None:
        """One API call; returns the JSON answer, or None for 404."""
        if query:
            path = f"{path}?{urlencode(query)}"
        headers = {"Accept": "application/json", "Content-Type": content_type}
        params = self.api.param_serialize(
            method=method,
            resource_path=path,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(*params, _request_timeout=timeout)
        data: bytes = response.read()  # type: ignore[no-untyped-call]
        if response.status == 404:
            return None
        if response.status >= 400:
            raise ApiException(http_resp=response)  # keeps the headers: Retry-After
        result: dict[str, Any] = json.loads(data) if data else {}
        return result

    def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        return self.request("GET", kind.path(namespace, name))

    def serves(self, kind: Kind) -> bool:
        """Whether the API server has this kind (discovery, which every user may read).

        For a kind from a CRD that may not be installed: a write to a kind the server does
        not have is a 404, which `request` answers as None like an object that is not there.
        """
        found = self.request("GET", kind.prefix) or {}
        return any(resource.get("name") == kind.plural for resource in found.get("resources", []))

    def create(self, kind: Kind, namespace: str, body: dict[str, Any]) -> dict[str, Any] | None:
        return self.request("POST", kind.path(namespace), body)

    def patch(
        self, kind: Kind, namespace: str, name: str, patch: dict[str, Any], sub: str | None = None
    ) -> dict[str, Any] | None:
        path = kind.path(namespace, name, sub)
        return self.request("PATCH", path, patch, content_type=MERGE_PATCH)

    def delete(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        return self.request("DELETE", kind.path(namespace, name))

    def list(self, kind: Kind, namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]:
        """Objects matching the labels (re-checked here: kmock's emulator ignores labelSelector)."""
        query = {"labelSelector": ",".join(f"{k}={v}" for k, v in sorted(selector.items()))}
        answer = self.request("GET", kind.path(namespace), query=query) or {}
        return [
            item
            for item in answer.get("items", [])
            if selector.items() <= item.get("metadata", {}).get("labels", {}).items()
        ]


ObjectKey = tuple[str, str, str]  # (plural, namespace, name)


class RecordingKube(Kube):
    """A Kube for one pass that remembers the resourceVersion of every object it read or
    wrote (None: found missing or deleted), so that the watch events carrying exactly those
    versions can be told apart from news."""

    def __init__(self, api: ApiClient) -> None:
        super().__init__(api)
        self.versions: dict[ObjectKey, str | None] = {}

    def _saw(self, kind: Kind, namespace: str, name: str, obj: dict[str, Any] | None) -> None:
        version = (obj or {}).get("metadata", {}).get("resourceVersion")
        self.versions[kind.plural, namespace, name] = version

    def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        obj = super().get(kind, namespace, name)
        self._saw(kind, namespace, name, obj)
        return obj

    def create(self, kind: Kind, namespace: str, body: dict[str, Any]) -> dict[str, Any] | None:
        obj = super().create(kind, namespace, body)
        if obj is not None:
            self._saw(kind, namespace, obj["metadata"]["name"], obj)
        return obj

    def patch(
        self, kind: Kind, namespace: str, name: str, patch: dict[str, Any], sub: str | None = None
    ) -> dict[str, Any] | None:
        obj = super().patch(kind, namespace, name, patch, sub)
        if sub is None:
            self._saw(kind, namespace, name, obj)
        return obj

    def delete(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        obj = super().delete(kind, namespace, name)
        self.versions[kind.plural, namespace, name] = None
        return obj

    def list(self, kind: Kind, namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]:
        items = super().list(kind, namespace, selector)
        for item in items:
            self._saw(kind, namespace, item["metadata"]["name"], item)
        return items


class CachedKube(RecordingKube):
    """A RecordingKube for one pass that reads children and pods from the copies the watches
    keep instead of asking the API server: `children`, the children found there by key, and
    `pods`, the classifier's pods there (None: list them from the API server).

    A child not among `children` is read from the API server, as is every kind not watched: it
    may be a same-name stranger (not labelled as ours, so not watched), or one a pass wrote
    whose watch event has not come in yet. The copies are at least as recent as the watch
    event that asked for the pass, so a pass never reads a state older than what triggered
    it; a newer state is news whose own event asks for another pass."""

    def __init__(
        self,
        api: ApiClient,
        children: Mapping[ObjectKey, dict[str, Any]],
        pods: list[dict[str, Any]] | None,
    ) -> None:
        super().__init__(api)
        self.children = children
        self.pods = pods

    def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        cached = self.children.get((kind.plural, namespace, name))
        if cached is None:
            return super().get(kind, namespace, name)
        obj = copy.deepcopy(cached)  # the watches' copy is shared: a pass must not alter it
        self._saw(kind, namespace, name, obj)
        return obj

    def list(self, kind: Kind, namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]:
        if kind != PODS or self.pods is None:
            return super().list(kind, namespace, selector)
        items = [
            copy.deepcopy(item)
            for item in self.pods
            if item["metadata"].get("namespace") == namespace
            and selector.items() <= item["metadata"].get("labels", {}).items()
        ]
        for item in items:
            self._saw(kind, namespace, item["metadata"]["name"], item)
        return items


def namespace_terminating(exc: Exception) -> bool:
    """A write refused because its namespace is being deleted: nothing is left to do there."""
    if not isinstance(exc, ApiException) or exc.status != 403 or not exc.body:
        return False
    try:
        causes = json.loads(exc.body).get("details", {}).get("causes", [])
    except ValueError:
        return False
    return any(cause.get("reason") == "NamespaceTerminating" for cause in causes)


def describe(exc: Exception) -> str:
    """A failed call in a few words, for a log line."""
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    return f"{type(exc).__name__}: {exc}"
