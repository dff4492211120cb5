"""The CRD on a real API server: what `kubectl apply` refuses (naming the field), the defaults
it fills in, what `kubectl explain` says, and what the operator makes of a child refused.

These check what only the API server can: that it compiles the CEL rules, applies the
structural schema (pruning, strict field validation) and defaults as the unit tests assume.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from classifiers import classifier
from control_plane import ControlPlane
from operators import Namespace

REPO = Path(__file__).resolve().parents[2]
WAIT = 30


@pytest.mark.parametrize(
    ("name", "spec", "expected"),
    [
        # The Service would refuse the dot, the instance label the length: no half children.
        ("resnet.v2", {}, ["metadata.name: Invalid value:", "DNS-1035 label"]),
        ("a" * 70, {}, ["metadata.name: Invalid value:", "at most 63 characters"]),
        (
            "port",
            {"env": [{"name": "EXTRA", "value": "1"}, {"name": "PORT", "value": "6000"}]},
            ["spec.env[1].name: Forbidden: PORT is set by the operator", "the probes"],
        ),
        (
            "topk",
            {"env": [{"name": "TOP_K", "value": "9"}]},
            ["spec.env[0].name: Forbidden: TOP_K is set by the operator: set spec.server.topK"],
        ),
        ("typo", {"affinity": {"nodeAfinity": {}}}, ['unknown field "spec.affinity.nodeAfinity"']),
        (
            "typo2",
            {"affinity": {"podAntiAffinity": {"requiredDuringScheduling": []}}},
            ['unknown field "spec.affinity.podAntiAffinity.requiredDuringScheduling"'],
        ),
        ("negative", {"resources": {"requests": {"cpu": "-1"}}}, ["spec.resources.requests.cpu"]),
        (
            "negative2",
            {"resources": {"limits": {"memory": -1}}},
            ["spec.resources.limits.memory: Invalid value: -1", "greater than or equal to 0"],
        ),
        (
            "gpu",
            {"resources": {"requests": {"nvidia.com/gpu": 1}}},
            ["spec.resources.limits: Invalid value:", "nvidia.com/gpu needs a limit equal"],
        ),
        (
            "gpu2",
            {"resources": {"requests": {"nvidia.com/gpu": 1}, "limits": {"nvidia.com/gpu": 2}}},
            ["spec.resources.limits: Invalid value:", "nvidia.com/gpu needs a limit equal"],
        ),
        (
            "over",
            {"resources": {"requests": {"memory": "3Gi"}, "limits": {"memory": "2048Mi"}}},
            ["spec.resources.requests: Invalid value: a request must not exceed its limit"],
        ),
        (
            "minmax",
            {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
            ["spec.autoscaling.minReplicas: Invalid value: must not exceed maxReplicas"],
        ),
        (
            "ranges",
            {"service": {"type": "ClusterIP", "loadBalancerSourceRanges": ["10.0.0.0/8"]}},
            ["spec.service.loadBalancerSourceRanges: Invalid value: only applies to type"],
        ),
        (
            "cidr",
            {"service": {"loadBalancerSourceRanges": ["999.0.0.0/8"]}},
            ["spec.service.loadBalancerSourceRanges[0]: Invalid value: ", "must be a CIDR"],
        ),
        (
            "queue",
            {"server": {"threads": 8, "maxQueue": 8}},
            ["spec.server.maxQueue: Invalid value: must be below threads"],
        ),
        (
            "annotation",
            {"service": {"annotations": {"ok": "1", "bad key!": "x"}}},
            ["spec.service.annotations: Invalid value: key bad key! is invalid"],
        ),
        (
            "labels",
            {"podLabels": {"app.kubernetes.io/instance": "other"}},
            ["spec.podLabels: Invalid value: must not set operator-owned labels"],
        ),
    ],
)
def test_kubectl_apply_refuses_with_the_field_named(
    plane: ControlPlane,
    plane_namespace: Namespace,
    name: str,
    spec: dict[str, Any],
    expected: list[str],
) -> None:
    done = plane.kubectl(
        "apply", "-n", plane_namespace.name, "-f", "-", stdin=classifier(name, spec), check=False
    )
    assert done.returncode != 0, f"accepted: {done.stdout}"
    for text in expected:
        assert text in done.stderr
    assert plane_namespace.get("imageclassifiers", name) is None


def test_the_examples_and_every_valid_block_are_accepted(
    plane: ControlPlane, plane_namespace: Namespace
) -> None:
    """The rules refuse nonsense only: the examples, and a spec using every field, apply."""
    for path in sorted((REPO / "examples").glob("*.yaml")):
        plane.kubectl("apply", "--dry-run=server", "-n", plane_namespace.name, "-f", str(path))
    everything = {
        "image": "registry.example/ms:1",
        "resources": {
            "requests": {"cpu": 2, "memory": "4Gi", "nvidia.com/gpu": 1},
            "limits": {"memory": "6Gi", "nvidia.com/gpu": "1"},
        },
        "nodeSelector": {"nvidia.com/gpu.present": "true"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 50,
                        "podAffinityTerm": {
                            "labelSelector": {"matchLabels": {"team": "vision"}},
                            "topologyKey": "kubernetes.io/hostname",
                        },
                    }
                ]
            }
        },
        "podAnnotations": {"example.com/owner": "vision"},
        "podLabels": {"team": "vision"},
        "env": [{"name": "HTTP_PROXY", "value": "http://proxy:3128"}],
        "service": {
            "annotations": {"service.beta.kubernetes.io/aws-load-balancer-type": "nlb"},
            "loadBalancerSourceRanges": ["10.0.0.0/8", "2001:db8::/32"],
        },
        "autoscaling": {"minReplicas": 2, "maxReplicas": 4},
        "server": {"threads": 8, "maxQueue": 6},
    }
    plane.kubectl(
        "apply",
        "--dry-run=server",
        "-n",
        plane_namespace.name,
        "-f",
        "-",
        stdin=classifier("everything", everything),
    )


def test_defaults_are_visible_in_the_stored_object(
    plane: ControlPlane, plane_namespace: Namespace
) -> None:
    plane.kubectl("apply", "-n", plane_namespace.name, "-f", "-", stdin=classifier("bare", {}))
    got = plane.kubectl("get", "ic", "bare", "-n", plane_namespace.name, "-o", "yaml").stdout
    spec = yaml.safe_load(got)["spec"]
    assert spec["replicas"] == 1 and spec["model"] == "resnet50"
    assert spec["resources"] == {
        "requests": {"cpu": "500m", "memory": "512Mi"},
        "limits": {"memory": "2Gi"},
    }
    assert spec["service"] == {"type": "LoadBalancer", "port": 80, "grpcPort": 8081}
    assert spec["runtime"] == {"backend": "auto", "precision": "auto"}
    assert spec["server"]["grpc"] is True and "modelSource" not in spec
    assert spec["server"]["topK"] == 5 and spec["server"]["threads"] == 32


def object_paths(schema: dict[str, Any], path: str) -> Iterator[str]:
    """Every field of the schema that has fields of its own, as `kubectl explain` paths."""
    if "items" in schema:
        schema = schema["items"]
    if schema.get("properties"):
        yield path
        for name, prop in schema["properties"].items():
            yield from object_paths(prop, f"{path}.{name}")


def test_kubectl_explain_describes_every_field(plane: ControlPlane) -> None:
    crd = yaml.safe_load((REPO / "crds" / "imageclassifier.yaml").read_text())
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    paths = [*object_paths(root["spec"], "spec"), *object_paths(root["status"], "status")]
    assert {"spec.server", "spec.affinity.podAffinity", "status.conditions"} <= set(paths)
    for path in paths:
        shown = plane.kubectl("explain", f"imageclassifier.{path}").stdout
        assert "FIELDS:" in shown, path
        assert "<no description>" not in shown and "<empty>" not in shown, (path, shown)
    replicas = plane.kubectl("explain", "imageclassifier.spec.replicas").stdout
    assert "Number of pods" in replicas and "Defaults to 1." in replicas


def test_partial_resources_and_typed_affinity_reach_the_deployment(plane_ns: Namespace) -> None:
    """The operator merges a partial block with the defaults; the real API server takes it."""
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["y"]}]}
                ]
            }
        }
    }
    plane_ns.create_classifier(
        "partial", {"resources": {"requests": {"memory": "4Gi"}}, "affinity": affinity}
    )
    deployment = plane_ns.wait_for("deployments", "partial", timeout=WAIT)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"] == {
        "requests": {"cpu": "500m", "memory": "4Gi"},
        "limits": {"memory": "4Gi"},
    }
    assert pod["affinity"] == affinity


def test_a_child_the_api_server_refuses_is_one_readable_sentence(plane_ns: Namespace) -> None:
    """A toleration with operator Exists and a value: only the Deployment's validation sees it.
    The condition names the classifier's field, in a sentence, not a JSON Status; the Service
    is not made after the refused Deployment."""
    ns = plane_ns
    ns.create_classifier(
        "tolerant", {"tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]}
    )
    cond = ns.wait_condition("tolerant", "Ready", "False", "InvalidSpec", timeout=WAIT)
    assert cond["message"] == (
        "the API server rejected the Deployment tolerant: spec.tolerations[0].operator: Invalid "
        "value: \"v\": value must be empty when `operator` is 'Exists' (the Deployment's "
        "spec.template.spec.tolerations[0].operator)"
    )
    assert ns.get("deployments", "tolerant") is None
    assert ns.get("services", "tolerant") is None
    warnings = [e for e in ns.events("tolerant") if e["reason"] == "InvalidSpec"]
    assert [e["message"] for e in warnings] == [cond["message"]]
