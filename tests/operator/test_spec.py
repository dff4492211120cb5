"""The pydantic spec: defaults, and the cross-field rules only the operator can check."""

from typing import Any

import pytest
from kubeclassify_operator.spec import InvalidSpec, parse_spec


def test_defaults() -> None:
    spec = parse_spec({})
    assert spec.model == "resnet50"
    assert spec.image == "ghcr.io/kubeclassify/modelserver:0.1.0"
    assert spec.replicas == 1
    assert spec.autoscaling is None
    assert spec.service.type == "LoadBalancer" and spec.service.port == 80
    assert spec.server.top_k == 5 and spec.server.max_batch_size == 16


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
            "spec.autoscaling: minReplicas (5) must not exceed maxReplicas (2)",
        ),
        (
            {"autoscaling": {"maxReplicas": 2}, "resources": {"requests": {"memory": "1Gi"}}},
            "spec: autoscaling needs resources.requests.cpu",
        ),
        (
            {"service": {"type": "ClusterIP", "loadBalancerSourceRanges": ["10.0.0.0/8"]}},
            "spec.service: loadBalancerSourceRanges only applies to type LoadBalancer",
        ),
        (
            {"podLabels": {"app.kubernetes.io/instance": "other"}},
            "spec: podLabels must not set operator-owned labels: app.kubernetes.io/instance",
        ),
        (
            {"resources": {"requests": {"nvidia.com/gpu": 1}, "limits": {"nvidia.com/gpu": 2}}},
            "spec: resources: nvidia.com/gpu requests (1) must equal limits",
        ),
        ({"replicas": -1}, "spec.replicas: Input should be greater than or equal to 0"),
        (
            {"server": {"threads": 8, "maxQueue": 8}},
            "spec.server: maxQueue (8) must be below threads (8), or 0",
        ),
        ({"model": "vgg16"}, "spec.model: Input should be 'resnet50'"),
    ],
)
def test_invalid_specs_name_the_field(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidSpec) as caught:
        parse_spec(raw)
    assert message in str(caught.value)


def test_gpu_limits_alone_are_fine() -> None:
    spec = parse_spec({"resources": {"limits": {"nvidia.com/gpu": 1, "memory": "4Gi"}}})
    assert spec.resources.limits["nvidia.com/gpu"] == 1
