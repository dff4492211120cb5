"""The pydantic spec: defaults, and the rules the operator checks (again) itself."""

from typing import Any

import pytest
from kubeclassify_operator.spec import InvalidSpec, check_name, parse_spec


def test_defaults() -> None:
    spec = parse_spec({})
    assert spec.model == "resnet50"
    assert spec.image is None  # the operator chooses (kubeclassify_operator.images)
    assert spec.replicas == 1
    assert spec.autoscaling is None
    assert spec.service.type == "LoadBalancer" and spec.service.port == 80
    assert spec.server.top_k == 5 and spec.server.max_batch_size == 16


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
            "spec.autoscaling.minReplicas: 5 must not exceed maxReplicas (2)",
        ),
        (
            {"autoscaling": {"maxReplicas": 2}, "resources": {"requests": {"cpu": "0"}}},
            "spec.resources.requests.cpu: autoscaling needs a CPU request above 0",
        ),
        (
            {"service": {"type": "ClusterIP", "loadBalancerSourceRanges": ["10.0.0.0/8"]}},
            "spec.service.loadBalancerSourceRanges: only applies to type LoadBalancer, not Cluster",
        ),
        (
            {"podLabels": {"app.kubernetes.io/instance": "other"}},
            "spec.podLabels: must not set operator-owned labels: app.kubernetes.io/instance",
        ),
        (
            {"resources": {"requests": {"nvidia.com/gpu": 1}, "limits": {"nvidia.com/gpu": 2}}},
            "spec.resources.limits: nvidia.com/gpu needs a limit equal to its request (1), not 2",
        ),
        # A GPU request without a limit: the Deployment would be refused.
        (
            {"resources": {"requests": {"nvidia.com/gpu": 1}}},
            "spec.resources.limits: nvidia.com/gpu needs a limit equal to its request (1): an "
            "extended resource cannot be overcommitted",
        ),
        (
            {"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1500m"}}},
            "spec.resources.requests: the cpu request (2) must not exceed its limit (1500m)",
        ),
        # Negative amounts, as text and as a number.
        (
            {"resources": {"requests": {"cpu": "-1"}}},
            "spec.resources.requests.cpu: '-1' is not a non-negative quantity",
        ),
        ({"resources": {"limits": {"memory": -1}}}, "spec.resources.limits.memory: must not be"),
        ({"resources": {"limits": {"memory": "lots"}}}, "spec.resources.limits.memory: 'lots'"),
        ({"replicas": -1}, "spec.replicas: Input should be greater than or equal to 0"),
        (
            {"server": {"threads": 8, "maxQueue": 8}},
            "spec.server.maxQueue: 8 must be below threads (8), or 0",
        ),
        ({"model": "vgg16"}, "spec.model: Input should be 'resnet50'"),
        # Variables the operator sets: the probes and the Service target 5000.
        (
            {"env": [{"name": "EXTRA", "value": "1"}, {"name": "PORT", "value": "6000"}]},
            "spec.env[1].name: PORT is set by the operator",
        ),
        ({"env": [{"name": "HOST", "value": "127.0.0.1"}]}, "spec.env[0].name: HOST is set"),
        (
            {"env": [{"name": "TOP_K", "value": "9"}]},
            "spec.env[0].name: TOP_K is set by the operator: set spec.server.topK instead",
        ),
        (
            {"env": [{"name": "MODEL_PRECISION", "value": "int8"}]},
            "spec.env[0].name: MODEL_PRECISION is set by the operator: set spec.runtime.precision",
        ),
        (
            {"env": [{"name": "GRPC_PORT", "value": "0"}]},
            "spec.env[0].name: GRPC_PORT is set by the operator: set spec.server.grpc instead",
        ),
        (
            {"env": [{"name": "PAGE", "value": "false"}]},
            "spec.env[0].name: PAGE is set by the operator: set spec.server.page instead",
        ),
        ({"runtime": {"precision": "fp16"}}, "spec.runtime.precision: Input should be 'auto'"),
        ({"runtime": {"backend": "onnx"}}, "spec.runtime.backend: Input should be 'auto'"),
        (
            {"service": {"port": 8081}},
            "spec.service.port: 8081 must differ from service.grpcPort while server.grpc is on",
        ),
        # What a child would refuse, refused before any child is made (the Service is made
        # after the Deployment: refused there, it would leave the classifier half made).
        (
            {"service": {"annotations": {"ok": "1", "bad key!": "x"}}},
            "spec.service.annotations: key 'bad key!' is invalid",
        ),
        (
            {"service": {"loadBalancerSourceRanges": ["999.0.0.0/8"]}},
            "spec.service.loadBalancerSourceRanges[0]: '999.0.0.0/8' is not a CIDR",
        ),
        ({"podAnnotations": {"a/b/c": "x"}}, "spec.podAnnotations: key 'a/b/c' is invalid"),
        ({"nodeSelector": {"-x": "1"}}, "spec.nodeSelector: key '-x' is invalid"),
        ({"podLabels": {"team": "bad value!"}}, "spec.podLabels: team=bad value!: a label value"),
        ({"podLabels": {"team": "v" * 64}}, "spec.podLabels: team=vvv"),
        # A misspelt affinity key is an error, not silently dropped.
        (
            {"affinity": {"nodeAfinity": {}}},
            "spec.affinity.nodeAfinity: Extra inputs are not permitted",
        ),
        (
            {"affinity": {"podAntiAffinity": {"requiredDuringScheduling": []}}},
            "spec.affinity.podAntiAffinity.requiredDuringScheduling: Extra inputs",
        ),
    ],
)
def test_invalid_specs_name_the_field(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidSpec) as caught:
        parse_spec(raw)
    assert message in str(caught.value)


def test_gpu_limits_alone_are_fine() -> None:
    spec = parse_spec({"resources": {"limits": {"nvidia.com/gpu": 1, "memory": "4Gi"}}})
    assert spec.resources.limits["nvidia.com/gpu"] == 1


@pytest.mark.parametrize(
    ("resources", "requests", "limits"),
    [
        ({}, {"cpu": "500m", "memory": "512Mi"}, {"memory": "2Gi"}),
        # A partial block keeps the other defaults; the memory limit rises to the request.
        ({"requests": {"memory": "4Gi"}}, {"cpu": "500m", "memory": "4Gi"}, {"memory": "4Gi"}),
        ({"requests": {"memory": "768Mi"}}, {"cpu": "500m", "memory": "768Mi"}, {"memory": "2Gi"}),
        ({"requests": {"cpu": 2}}, {"cpu": 2, "memory": "512Mi"}, {"memory": "2Gi"}),
        # A CPU limit below the default request pulls the request down, as Kubernetes would.
        (
            {"limits": {"cpu": "250m"}},
            {"cpu": "250m", "memory": "512Mi"},
            {"cpu": "250m", "memory": "2Gi"},
        ),
        ({"limits": {"memory": "256Mi"}}, {"cpu": "500m", "memory": "256Mi"}, {"memory": "256Mi"}),
        (
            {"requests": {"nvidia.com/gpu": 1}, "limits": {"nvidia.com/gpu": 1}},
            {"cpu": "500m", "memory": "512Mi", "nvidia.com/gpu": 1},
            {"memory": "2Gi", "nvidia.com/gpu": 1},
        ),
        # A fully given block is taken as it is.
        (
            {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "6Gi"}},
            {"cpu": "2", "memory": "4Gi"},
            {"memory": "6Gi"},
        ),
    ],
)
def test_partial_resources_merge_with_the_defaults(
    resources: dict[str, Any], requests: dict[str, Any], limits: dict[str, Any]
) -> None:
    spec = parse_spec({"resources": resources})
    assert spec.resources.requests == requests
    assert spec.resources.limits == limits


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("resnet", True),
        ("resnet-v2", True),
        ("a" * 63, True),
        ("a" * 64, False),  # the app.kubernetes.io/instance label value is at most 63
        ("resnet.v2", False),  # a Service name has no dots
        ("2resnet", False),  # nor a leading digit
        ("resnet-", False),
        ("Resnet", False),
    ],
)
def test_names_every_child_can_take(name: str, valid: bool) -> None:
    if valid:
        check_name(name)
    else:
        with pytest.raises(InvalidSpec, match=r"^metadata\.name: .*DNS-1035 label"):
            check_name(name)
