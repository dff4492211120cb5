"""The canary's Gateway mode on a real API server with the Gateway API's CRDs installed
(`../shared/gateway-api/`, the official standard channel; issue 20).

The API server judges the HTTPRoutes the operator builds with the Gateway API's own schema:
every route the builder makes is accepted, and the weights the schema refuses (negative, over
1,000,000, not an integer) are refused as it says, naming the field. No Gateway implementation
runs here, so nothing routes by them: what is checked is the objects.
"""

from collections.abc import Iterator
from typing import Any

import gateway_api
import pytest
from control_plane import ControlPlane
from kubeclassify_operator.builders import Owner
from kubeclassify_operator.routes import MAX_WEIGHT, build_route, weights
from operators import Cluster, Namespace

ROUTES = "/apis/gateway.networking.k8s.io/v1/namespaces/{namespace}/httproutes"
OWNER_UID = "0b7c3f9e-1111-2222-3333-444455556666"
# A spread of percents, both ends and the middle (the unit tests take every one).
PERCENTS = (0, 1, 5, 20, 50, 99, 100)


class Gateway:
    name = "edge"
    namespace: str | None = "infra"
    section_name: str | None = "http"


@pytest.fixture(scope="module")
def gateway_plane(plane: ControlPlane) -> Iterator[ControlPlane]:
    """The plane with the Gateway API installed for this module, and removed after it (the
    other tests run on a cluster without it, as most clusters are)."""
    if not gateway_api.available():
        pytest.skip(f"{gateway_api.GATEWAY_API}: the Gateway API CRDs are not there")
    gateway_api.install(plane)
    yield plane
    gateway_api.uninstall(plane)


def dry_run_create(cluster: Cluster, namespace: str, route: dict[str, Any]) -> Any:
    """POST the route with dryRun=All: the whole admission (schema, CEL, defaults) and no
    write. The answer: the route as it would be stored (201), or the API server's Status."""
    response = cluster.session.post(
        cluster.url + ROUTES.format(namespace=namespace),
        params={"dryRun": "All"},
        json=route,
        timeout=10,
    )
    assert response.status_code in (201, 422), response.text
    return response.status_code, response.json()


@pytest.mark.parametrize("ready", [True, False], ids=["ready", "unready"])
@pytest.mark.parametrize("percent", PERCENTS)
def test_the_api_server_accepts_every_route_the_operator_builds(
    gateway_plane: ControlPlane,
    plane_cluster: Cluster,
    plane_namespace: Namespace,
    percent: int,
    ready: bool,
) -> None:
    owner = Owner("cats", plane_namespace.name, OWNER_UID)
    route = build_route(owner, Gateway(), 80, percent, ready)
    status, stored = dry_run_create(plane_cluster, plane_namespace.name, route)
    assert status == 201, stored
    split = weights(percent, ready)
    stored_weights = [b["weight"] for b in stored["spec"]["rules"][0]["backendRefs"]]
    assert stored_weights == ([100] if split is None else list(split))
    assert stored["spec"]["parentRefs"] == route["spec"]["parentRefs"]


# The weight schema of HTTPRoute's backendRefs: int32, minimum 0, maximum 1000000.
FIELD = "spec.rules[0].backendRefs[1].weight"


@pytest.mark.parametrize(
    ("weight", "refusal"),
    [
        (-1, f"{FIELD}: Invalid value: -1: {FIELD} in body should be greater than or equal to 0"),
        (
            MAX_WEIGHT + 1,
            f"{FIELD}: Invalid value: {MAX_WEIGHT + 1}: {FIELD} in body should be less than or"
            f" equal to {MAX_WEIGHT}",
        ),
        (2.5, f'{FIELD}: Invalid value: "float64": {FIELD} in body must be of type int32'),
        ("10", f'{FIELD}: Invalid value: "string": {FIELD} in body must be of type integer'),
        (None, None),  # unset: the schema's default, 1
        (0, None),
        (MAX_WEIGHT, None),
    ],
    ids=["negative", "over-max", "fraction", "string", "unset", "zero", "max"],
)
def test_the_api_server_refuses_the_weights_the_schema_refuses(
    gateway_plane: ControlPlane,
    plane_cluster: Cluster,
    plane_namespace: Namespace,
    weight: object,
    refusal: str | None,
) -> None:
    owner = Owner("cats", plane_namespace.name, OWNER_UID)
    route = build_route(owner, Gateway(), 80, 50, True)
    backend = route["spec"]["rules"][0]["backendRefs"][1]
    if weight is None:
        del backend["weight"]
    else:
        backend["weight"] = weight
    status, answer = dry_run_create(plane_cluster, plane_namespace.name, route)
    if refusal is None:
        assert status == 201, answer
        stored = answer["spec"]["rules"][0]["backendRefs"][1]["weight"]
        assert stored == (1 if weight is None else weight)
        return
    assert status == 422
    causes = [f"{c['field']}: {c['message']}" for c in answer["details"]["causes"]]
    assert any(cause.startswith(refusal) for cause in causes), causes
    # The rest are field-less (<nil>): "some validation rules were not checked", and the like.
    assert {c["field"] for c in answer["details"]["causes"]} - {"<nil>"} == {FIELD}
