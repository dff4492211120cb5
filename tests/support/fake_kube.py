"""An in-memory Kubernetes API for `reconcile()`: the middle tier between pure functions and the
real operator on a real plane.

It answers `Kube`'s calls (get, create, merge patch, delete, list by labels) as an API server
would for one client: resourceVersions and generations that move on every write, 404 as None,
409 on a duplicate create, and an API error armed on demand. No controller runs: a test writes
what the Deployment controller, the kubelet or a cloud would (`put`, `update_status`). Every
write the operator makes is logged, so a test can say what a pass wrote, or that it wrote
nothing.
"""

import copy
import itertools
import uuid
from dataclasses import dataclass
from typing import Any

from kubeclassify_operator.kube import CLASSIFIERS, DEPLOYMENTS, PODS, Kind, Kube
from kubeclassify_operator.spec import GROUP, KIND, VERSION
from kubernetes.client.exceptions import ApiException

Key = tuple[str, str, str]  # (plural, namespace, name)


@dataclass(frozen=True)
class Write:
    """One write the operator made: `verb` is create, patch or delete; `sub` a subresource."""

    verb: str
    plural: str
    name: str
    sub: str | None = None


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: `patch` applied to `target` (null removes a key; anything but an object
    replaces whatever was there)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


class FakeKube(Kube):
    """A `Kube` whose API server is a dict; only the five object calls (and discovery of a
    kind) are served."""

    def __init__(self) -> None:
        # No ApiClient: nothing here may reach a network.
        self.objects: dict[Key, dict[str, Any]] = {}
        self.writes: list[Write] = []
        self._refusals: dict[tuple[str, str], ApiException] = {}
        self._versions = itertools.count(1)
        # The kinds (plurals) this API server does not have, as a CRD not installed: discovery
        # leaves them out, reads and writes of them are 404s.
        self.missing: set[str] = set()

    def request(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        raise AssertionError(f"FakeKube serves get, create, patch, delete and list only: {args}")

    # ------------------------------------------------------------------ the operator's calls

    def serves(self, kind: Kind) -> bool:
        return kind.plural not in self.missing

    def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        self._refused("get", kind)
        if kind.plural in self.missing:
            return None
        found = self.objects.get((kind.plural, namespace, name))
        return copy.deepcopy(found)

    def create(self, kind: Kind, namespace: str, body: dict[str, Any]) -> dict[str, Any] | None:
        self._refused("create", kind)
        if kind.plural in self.missing:
            return None  # a 404, as Kube answers one
        name = body["metadata"]["name"]
        if (kind.plural, namespace, name) in self.objects:
            raise ApiException(status=409, reason="Conflict")
        self.writes.append(Write("create", kind.plural, name))
        return self.put(kind, {**body, "metadata": {**body["metadata"], "namespace": namespace}})

    def patch(
        self, kind: Kind, namespace: str, name: str, patch: dict[str, Any], sub: str | None = None
    ) -> dict[str, Any] | None:
        self._refused("patch", kind)
        current = self.objects.get((kind.plural, namespace, name))
        if current is None:
            return None
        self.writes.append(Write("patch", kind.plural, name, sub))
        # The status subresource takes only the status; the object itself, all but the status.
        part = {"status": patch.get("status")} if sub == "status" else dict(patch)
        if sub is None:
            part.pop("status", None)
        updated = apply_merge_patch(current, part)
        if updated.get("spec") != current.get("spec"):
            updated["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
        return self._store(kind, updated)

    def delete(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        self._refused("delete", kind)
        gone = self.objects.pop((kind.plural, namespace, name), None)
        if gone is not None:
            self.writes.append(Write("delete", kind.plural, name))
        return {"kind": "Status", "status": "Success"} if gone is not None else None

    def list(self, kind: Kind, namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]:
        self._refused("list", kind)
        return [
            copy.deepcopy(obj)
            for (plural, obj_namespace, _), obj in sorted(self.objects.items())
            if plural == kind.plural
            and obj_namespace == namespace
            and selector.items() <= obj["metadata"].get("labels", {}).items()
        ]

    # ------------------------------------------------------------------ everyone else's part

    def put(self, kind: Kind, body: dict[str, Any]) -> dict[str, Any]:
        """Store `body` as someone else would create it (a user, a controller): not logged as
        the operator's write. Gets a uid, generation 1 and a fresh resourceVersion."""
        obj = copy.deepcopy(body)
        meta = obj["metadata"]
        meta.setdefault("namespace", "default")
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("generation", 1)
        meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
        return self._store(kind, obj)

    def update(self, kind: Kind, namespace: str, name: str, patch: dict[str, Any]) -> None:
        """Merge `patch` into an object (status included) as its controller or a user would,
        without it counting as the operator's write."""
        key = (kind.plural, namespace, name)
        updated = apply_merge_patch(self.objects[key], patch)
        if updated.get("spec") != self.objects[key].get("spec"):
            updated["metadata"]["generation"] += 1
        self._store(kind, updated)

    def refuse(self, verb: str, kind: Kind, error: ApiException) -> None:
        """The next `verb` call on `kind` raises `error` (once)."""
        self._refusals[verb, kind.plural] = error

    def classifier(
        self, name: str, spec: dict[str, Any], namespace: str = "default"
    ) -> dict[str, Any]:
        """A new ImageClassifier, stored and returned as the operator would read it."""
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
        return self.put(CLASSIFIERS, body)

    # ------------------------------------------------------------------ inside

    def _store(self, kind: Kind, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        meta["resourceVersion"] = str(next(self._versions))
        self.objects[kind.plural, meta["namespace"], meta["name"]] = obj
        return copy.deepcopy(obj)

    def _refused(self, verb: str, kind: Kind) -> None:
        error = self._refusals.pop((verb, kind.plural), None)
        if error is not None:
            raise error


def played_pod(
    of: dict[str, Any], index: int, ready: bool, state: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A pod as the ReplicaSet makes it from Deployment `of`'s template, with the kubelet's
    status: ready or not, and the model server's container state."""
    template = of["spec"]["template"]
    container = {
        "name": "modelserver",
        "ready": ready,
        "restartCount": 0,
        "state": state or {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
    }
    return {
        "metadata": {"name": f"{of['metadata']['name']}-{index}", **template["metadata"]},
        "spec": template["spec"],
        "status": {
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [container],
        },
    }


def play_controllers(
    kube: FakeKube, namespace: str, ready: dict[str, int], state: dict[str, Any] | None = None
) -> None:
    """The Deployment controller and the kubelet: every pod replaced by each named Deployment's
    pods of its current template, `ready[name]` of them ready (the rest in `state`), and its
    status."""
    for key in [key for key in kube.objects if key[0] == PODS.plural]:
        del kube.objects[key]
    for name, count in ready.items():
        found = kube.get(DEPLOYMENTS, namespace, name)
        if found is None:
            continue
        replicas = found["spec"]["replicas"]
        for index in range(replicas):
            ok = index < count
            kube.put(PODS, played_pod(found, index, ok, None if ok else state))
        status = {
            "observedGeneration": found["metadata"]["generation"],
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": min(count, replicas),
        }
        kube.update(DEPLOYMENTS, namespace, name, {"status": status})
