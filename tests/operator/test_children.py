"""The registry of child kinds, held against what depends on it: the RBAC rules that deploy/
(and, rendered the same, the chart) grant, and the builders."""

from pathlib import Path

import pytest
import yaml
from kubeclassify_operator.builders import Owner
from kubeclassify_operator.children import (
    BY_KIND,
    CHILDREN,
    WATCHED,
    ChildKind,
    Context,
    Split,
    grants,
)
from kubeclassify_operator.images import ServerImages
from kubeclassify_operator.spec import parse_spec

REPO = Path(__file__).resolve().parents[2]


def cluster_role_rules() -> set[tuple[str, str, str]]:
    """The (apiGroup, resource, verb) triples deploy/rbac.yaml's ClusterRole grants."""
    docs = yaml.safe_load_all((REPO / "deploy" / "rbac.yaml").read_text())
    (role,) = (doc for doc in docs if doc["kind"] == "ClusterRole")
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_the_cluster_role_grants_exactly_what_the_children_need() -> None:
    """Every child kind's (and the pods') rules are the registry's: a new child kind needs its
    rule, and a rule no child needs is gone (test_security.py checks the requests themselves)."""
    kinds = {(kind.group, kind.plural) for kind in (*WATCHED, *(c.api for c in CHILDREN))}
    granted = {rule for rule in cluster_role_rules() if rule[:2] in kinds}
    assert sorted(granted) == sorted(grants())


def test_only_an_optional_child_is_ever_deleted() -> None:
    assert {child.key for child in CHILDREN if "delete" in child.verbs()} == {
        "Deployment/canary",
        "HorizontalPodAutoscaler",
        "Service/stable",
        "Service/canary",
        "HTTPRoute",
    }


def test_a_child_of_a_kind_the_cluster_may_lack_is_not_watched() -> None:
    """kopf cannot watch a kind the API server does not have (the Gateway API's HTTPRoute):
    such a child is only read and written in a pass."""
    assert {child.key for child in CHILDREN if not child.watched} == {"HTTPRoute"}
    assert all(child.api in WATCHED for child in CHILDREN if child.watched)
    assert all(child.api not in WATCHED for child in CHILDREN if not child.watched)


def test_each_kind_is_watched_once() -> None:
    assert len(WATCHED) == len(set(WATCHED))


@pytest.mark.parametrize("child", CHILDREN, ids=lambda child: child.key)
def test_each_builder_makes_its_kind_where_the_registry_says(child: ChildKind) -> None:
    canary = {"trafficPercent": 20}
    spec = parse_spec(
        {"autoscaling": {"maxReplicas": 3}, "canary": canary, "gateway": {"name": "edge"}}
    )
    context = Context(ServerImages(), Split(stable=2, canary=1))
    built = child.build(Owner("cats", "ns", "uid"), spec, None, context)
    assert built is not None
    assert built["kind"] == child.kind
    assert built["metadata"]["name"] == child.name("cats")
    group, _, version = built["apiVersion"].rpartition("/")
    assert (group, version) == (child.api.group, child.api.version)
    assert BY_KIND[child.kind].kind == child.kind


def test_a_child_acts_only_on_one_applied_before_it() -> None:
    """The pass decides whether it may write an HPA from the Deployment it already applied."""
    kinds = [child.key for child in CHILDREN]
    for index, child in enumerate(CHILDREN):
        if child.acts_on:
            assert child.acts_on in kinds[:index]
