"""The Gateway mode's pure builders (issue 20): a Service per track, and an HTTPRoute whose
weights never send a request to a canary that cannot answer.

The route is checked here against the HTTPRoute CRD's own schema (../shared/gateway-api/, the
official standard channel) as JSON Schema; test_plane_gateway.py has a real API server judge
it, CEL rules included.
"""

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from gateway_api import GATEWAY_API
from kubeclassify_operator.builders import Owner, build_service, with_last_applied
from kubeclassify_operator.names import (
    INSTANCE_LABEL,
    MANAGED_BY_LABEL,
    TRACK_LABEL,
    selector_labels,
)
from kubeclassify_operator.routes import (
    CANARY,
    MAX_WEIGHT,
    STABLE,
    TRACKS,
    build_route,
    build_track_service,
    route_share,
    weights,
)
from kubeclassify_operator.spec import parse_spec

OWNER = Owner(name="cats", namespace="ml", uid="0b7c3f9e-1111-2222-3333-444455556666")
K8S_VERSION = "1.37.0"
PERCENTS = range(101)


@dataclass(frozen=True)
class Gateway:
    """A stand-in for spec.gateway: what the builder reads of it."""

    name: str
    namespace: str | None = None
    section_name: str | None = None


GATEWAY = Gateway("edge", "infra", "https")


def route_validator() -> jsonschema.protocols.Validator:
    path = GATEWAY_API / "httproutes.yaml"
    if not path.exists():
        pytest.fail(f"{path}: the Gateway API CRDs are not there (../shared)")
    return _schema(path)


@functools.cache
def _schema(path: Path) -> jsonschema.protocols.Validator:
    """The v1 schema of the HTTPRoute CRD, read and checked once (the file is 400 kB)."""
    crd = yaml.safe_load(path.read_text())
    (v1,) = (v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema = v1["schema"]["openAPIV3Schema"]
    validator: jsonschema.protocols.Validator = jsonschema.Draft7Validator(schema)
    return validator


# ---------------------------------------------------------------- the track Services


@pytest.mark.parametrize("track", TRACKS)
def test_a_track_service_selects_its_tracks_pods_on_the_main_services_ports(track: str) -> None:
    spec = parse_spec(
        {"service": {"type": "LoadBalancer", "port": 8080, "annotations": {"a": "b"}}}
    )
    service = build_track_service(OWNER, spec, track)
    kubernetes_validate.validate(with_last_applied(service), K8S_VERSION, strict=True)
    assert service["metadata"]["name"] == f"cats-{track}"
    assert service["spec"]["type"] == "ClusterIP"
    assert "annotations" not in service["metadata"]  # a load balancer's, not the Gateway's
    assert service["spec"]["selector"] == {**selector_labels("cats"), TRACK_LABEL: track}
    assert service["spec"]["ports"] == build_service(OWNER, spec)["spec"]["ports"]
    labels = service["metadata"]["labels"]
    assert labels[INSTANCE_LABEL] == "cats"
    assert MANAGED_BY_LABEL in labels
    (ref,) = service["metadata"]["ownerReferences"]
    assert ref["uid"] == OWNER.uid
    assert ref["controller"] is True


def test_a_track_service_without_grpc_has_the_http_port_alone() -> None:
    spec = parse_spec({"server": {"grpc": False}})
    ports = build_track_service(OWNER, spec, CANARY)["spec"]["ports"]
    assert [port["name"] for port in ports] == ["http"]


# ---------------------------------------------------------------- the weights


@pytest.mark.parametrize("percent", PERCENTS)
def test_a_ready_canary_gets_its_percent(percent: int) -> None:
    expected = None if percent == 0 else (100 - percent, percent)
    assert weights(percent, canary_ready=True) == expected


@pytest.mark.parametrize("percent", PERCENTS)
def test_a_canary_with_no_ready_pod_gets_no_request(percent: int) -> None:
    split = weights(percent, canary_ready=False)
    assert split is None or split == (100, 0)


@pytest.mark.parametrize("ready", [True, False])
def test_a_rolled_back_canary_is_no_backend(ready: bool) -> None:
    assert all(weights(p, ready, rolled_back=True) is None for p in PERCENTS)


@pytest.mark.parametrize("percent", [-1, 101, 1000])
def test_a_percent_outside_0_to_100_is_a_bug(percent: int) -> None:
    with pytest.raises(ValueError, match=r"0\.\.100"):
        weights(percent, canary_ready=True)


# ---------------------------------------------------------------- the HTTPRoute


def test_the_route_attaches_to_the_gateway_and_splits_between_the_track_services() -> None:
    route = build_route(OWNER, GATEWAY, port=80, percent=20, canary_ready=True)
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["kind"] == "HTTPRoute"
    assert route["metadata"]["name"] == "cats"
    assert route["metadata"]["namespace"] == "ml"
    assert route["metadata"]["ownerReferences"][0]["uid"] == OWNER.uid
    assert route["spec"]["parentRefs"] == [
        {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "name": "edge",
            "namespace": "infra",
            "sectionName": "https",
        }
    ]
    assert route["spec"]["rules"] == [
        {
            "backendRefs": [
                {"group": "", "kind": "Service", "name": "cats-stable", "port": 80, "weight": 80},
                {"group": "", "kind": "Service", "name": "cats-canary", "port": 80, "weight": 20},
            ]
        }
    ]


def test_a_gateway_in_the_routes_namespace_is_named_alone() -> None:
    route = build_route(OWNER, Gateway("edge"), port=80, percent=5, canary_ready=True)
    assert route["spec"]["parentRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"}
    ]


@pytest.mark.parametrize(
    ("percent", "ready", "rolled_back"),
    [(0, True, False), (30, True, True), (0, False, False)],
)
def test_no_canary_traffic_is_the_stable_backend_alone(
    percent: int, ready: bool, rolled_back: bool
) -> None:
    route = build_route(OWNER, GATEWAY, 80, percent, ready, rolled_back)
    (rule,) = route["spec"]["rules"]
    assert [(b["name"], b["weight"]) for b in rule["backendRefs"]] == [(f"cats-{STABLE}", 100)]


@pytest.mark.parametrize("ready", [True, False])
@pytest.mark.parametrize("percent", PERCENTS)
def test_every_route_the_builder_makes_fits_the_gateway_api_schema(
    percent: int, ready: bool
) -> None:
    """Property-style, over every percent: integer weights within the schema's [0, 1000000],
    two backends at most, and the CRD's JSON schema satisfied."""
    route = build_route(OWNER, GATEWAY, 8080, percent, ready)
    route_validator().validate(route)
    for rule in route["spec"]["rules"]:
        for backend in rule["backendRefs"]:
            assert type(backend["weight"]) is int
            assert 0 <= backend["weight"] <= MAX_WEIGHT
        assert sum(b["weight"] for b in rule["backendRefs"]) > 0  # never every backend at 0


@pytest.mark.parametrize("weight", [-1, MAX_WEIGHT + 1, 2.5, "10"])
def test_the_schema_refuses_what_the_builder_never_makes(weight: object) -> None:
    """The other half of the property: the JSON schema this file checks with does refuse."""
    route = build_route(OWNER, GATEWAY, 8080, 50, True)
    route["spec"]["rules"][0]["backendRefs"][1]["weight"] = weight
    with pytest.raises(jsonschema.ValidationError):
        route_validator().validate(route)


# ---------------------------------------------------------------- the share in force


@pytest.mark.parametrize("percent", PERCENTS)
def test_the_share_in_force_is_the_percent_the_route_was_built_for(percent: int) -> None:
    assert route_share(build_route(OWNER, GATEWAY, 80, percent, canary_ready=True)) == percent
    assert route_share(build_route(OWNER, GATEWAY, 80, percent, canary_ready=False)) == 0


def _route(*backends: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "cats"}, "spec": {"rules": [{"backendRefs": list(backends)}]}}


@pytest.mark.parametrize(
    ("route", "share"),
    [
        (None, None),
        ({"metadata": {"name": "cats"}, "spec": {}}, None),
        (_route(), None),
        # Weights as someone else wrote them: any scale, unset is 1, all at 0 is no share.
        (_route({"name": "cats-stable", "weight": 1}, {"name": "cats-canary", "weight": 3}), 75),
        (_route({"name": "cats-stable"}, {"name": "cats-canary"}), 50),
        (_route({"name": "cats-stable", "weight": 0}, {"name": "cats-canary", "weight": 0}), None),
        (_route({"name": "cats-canary", "weight": 2 * MAX_WEIGHT // 3}), 100),
        # A same-name Service of another namespace is not this classifier's canary.
        (_route({"name": "cats-stable"}, {"name": "cats-canary", "namespace": "other"}), 0),
    ],
)
def test_the_share_in_force_reads_the_weights_as_they_stand(
    route: dict[str, Any] | None, share: int | None
) -> None:
    assert route_share(route) == share
