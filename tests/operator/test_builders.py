"""The pure manifest builders, table-driven; every manifest is checked against K8s schemas."""

from typing import Any

import kubernetes_validate
import pytest
from kubeclassify_operator import builders
from kubeclassify_operator.builders import Owner
from kubeclassify_operator.names import LAST_APPLIED, TEMPLATE_HASH, selector_labels
from kubeclassify_operator.spec import OWNED_ENV, ImageClassifierSpec

OWNER = Owner(name="cats", namespace="ml", uid="0b7c3f9e-1111-2222-3333-444455556666")
K8S_VERSION = "1.37.0"

SPECS: dict[str, dict[str, Any]] = {
    "minimal": {},
    "everything": {
        "image": "registry.example/ms:1",
        "imagePullPolicy": "Always",
        "imagePullSecrets": [{"name": "regcred"}],
        "replicas": 3,
        "resources": {
            "requests": {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": 1},
            "limits": {"memory": "6Gi", "nvidia.com/gpu": 1},
        },
        "nodeSelector": {"accelerator": "nvidia-l4"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["y"]}]}
                    ]
                }
            },
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 50,
                        "podAffinityTerm": {
                            "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": "x"}},
                            "topologyKey": "kubernetes.io/hostname",
                            "matchLabelKeys": ["pod-template-hash"],
                        },
                    }
                ]
            },
        },
        "podAnnotations": {"prometheus.io/scrape": "false", "team": "vision"},
        "podLabels": {"team": "vision"},
        "env": [{"name": "EXTRA", "value": "1"}],
        "service": {
            "type": "LoadBalancer",
            "port": 8080,
            "annotations": {"service.beta.kubernetes.io/aws-load-balancer-type": "nlb"},
            "loadBalancerSourceRanges": ["10.0.0.0/8"],
        },
        "server": {"topK": 3, "maxBatchSize": 32, "workers": 2},
    },
    "autoscaled": {"autoscaling": {"minReplicas": 2, "maxReplicas": 8}},
    "clusterip": {"service": {"type": "ClusterIP"}},
    "runtime": {"runtime": {"backend": "openvino", "precision": "bf16"}},
    "no-grpc": {"server": {"grpc": False}, "service": {"port": 8081}},
    "no-shutdown-delay": {"shutdownDelaySeconds": 0},
    "long-shutdown-delay": {"shutdownDelaySeconds": 30},
}


def build_all(raw: dict[str, Any]) -> list[dict[str, Any]]:
    spec = ImageClassifierSpec.model_validate(raw)
    manifests = [builders.build_deployment(OWNER, spec), builders.build_service(OWNER, spec)]
    hpa = builders.build_hpa(OWNER, spec)
    return manifests + ([hpa] if hpa else [])


@pytest.mark.parametrize("name", SPECS)
def test_every_manifest_is_valid_kubernetes(name: str) -> None:
    for manifest in build_all(SPECS[name]):
        kubernetes_validate.validate(builders.with_last_applied(manifest), K8S_VERSION, strict=True)


@pytest.mark.parametrize("name", SPECS)
def test_children_are_controlled_by_the_classifier(name: str) -> None:
    for manifest in build_all(SPECS[name]):
        meta = manifest["metadata"]
        assert (meta["name"], meta["namespace"]) == ("cats", "ml")
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "kubeclassify.io/v1alpha1",
                "kind": "ImageClassifier",
                "name": "cats",
                "uid": OWNER.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert meta["labels"] == {
            "app.kubernetes.io/name": "kubeclassify",
            "app.kubernetes.io/instance": "cats",
            "app.kubernetes.io/component": "modelserver",
            "app.kubernetes.io/managed-by": "kubeclassify-operator",
        }


def test_deployment_runs_the_server_safely() -> None:
    spec = ImageClassifierSpec.model_validate({})
    deployment = builders.build_deployment(OWNER, spec)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert deployment["spec"]["selector"]["matchLabels"] == selector_labels("cats")
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert container["image"] == "ghcr.io/kubeclassify/modelserver:0.1.0"
    assert container["ports"] == [
        {"name": "http", "containerPort": 5000, "protocol": "TCP"},
        {"name": "grpc", "containerPort": 8081, "protocol": "TCP"},
    ]
    # Started once the model serves: Ready follows within a probe period, not a readiness tick.
    assert container["startupProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["startupProbe"]["periodSeconds"] == 1
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120  # slow model loads
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    security = container["securityContext"]
    assert security["runAsNonRoot"] and security["runAsUser"] == 10001
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False  # the server never calls the API
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {}}]
    assert container["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    assert pod["terminationGracePeriodSeconds"] > 5 + 30  # the sleep, then 30 s of draining
    assert container["resources"] == {
        "requests": {"cpu": "500m", "memory": "512Mi"},
        "limits": {"memory": "2Gi"},
    }
    for key in ("nodeSelector", "tolerations", "affinity", "imagePullSecrets"):
        assert key not in pod


@pytest.mark.parametrize(("delay", "grace"), [(0, 45), (5, 50), (30, 75)])
def test_a_stopping_pod_serves_until_its_endpoint_is_gone_then_drains(
    delay: int, grace: int
) -> None:
    """A rollout under load failed 24 of 3,559 requests on a real node: the old pod stopped
    accepting before kube-proxy stopped sending it connections. The kubelet's own preStop sleep
    holds SIGTERM back that long; the grace period (which the sleep counts against) still
    leaves the server its 30 s to drain, and the rollout never removes a ready pod first."""
    spec = ImageClassifierSpec.model_validate({"shutdownDelaySeconds": delay})
    deployment = builders.build_deployment(OWNER, spec)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    if delay:
        assert container["lifecycle"] == {"preStop": {"sleep": {"seconds": delay}}}
    else:
        assert "lifecycle" not in container
    assert pod["terminationGracePeriodSeconds"] == grace
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}


@pytest.mark.parametrize(
    ("server", "env", "expected"),
    [
        (
            {},
            [],
            {
                "MODEL_NAME": "resnet50",
                "PORT": "5000",
                "TOP_K": "5",
                "BATCH_MAX_SIZE": "16",
                "BATCH_MAX_DELAY_MS": "2",
                "MAX_UPLOAD_BYTES": "10485760",
                "WORKERS": "1",
                "THREADS": "32",
                "MODEL_BACKEND": "auto",
                "MODEL_PRECISION": "auto",
                "GRPC_PORT": "8081",
            },
        ),
        (
            {"topK": 3, "maxBatchSize": 64, "maxBatchDelayMs": 10, "workers": 2, "threads": 4},
            [],
            {"TOP_K": "3", "BATCH_MAX_SIZE": "64", "BATCH_MAX_DELAY_MS": "10", "THREADS": "4"},
        ),
        ({"maxUploadBytes": 2048}, [], {"MAX_UPLOAD_BYTES": "2048"}),
        ({"maxQueue": 8}, [], {"MAX_QUEUE": "8"}),
        ({"maxQueue": 0}, [], {"MAX_QUEUE": "0"}),
        ({"page": False}, [], {"PAGE": "false"}),
        (
            {},
            [{"name": "HTTP_PROXY", "value": "http://proxy:3128"}],
            {"HTTP_PROXY": "http://proxy:3128"},
        ),
    ],
)
def test_server_environment(
    server: dict[str, Any], env: list[dict[str, str]], expected: dict[str, str]
) -> None:
    spec = ImageClassifierSpec.model_validate({"server": server, "env": env})
    assert_environment(spec, expected)


def assert_environment(spec: ImageClassifierSpec, expected: dict[str, str]) -> None:
    variables = builders.server_env(spec)
    names = [var["name"] for var in variables]
    assert len(names) == len(set(names)), "a variable is set twice"
    values = {var["name"]: var["value"] for var in variables}
    assert expected.items() <= values.items()


@pytest.mark.parametrize(
    ("runtime", "expected"),
    [
        ({"backend": "openvino", "precision": "int8"}, ("openvino", "int8")),
        ({"backend": "tensorflow"}, ("tensorflow", "auto")),
        ({"precision": "bf16"}, ("auto", "bf16")),
    ],
)
def test_runtime_becomes_the_servers_backend_and_precision(
    runtime: dict[str, str], expected: tuple[str, str]
) -> None:
    spec = ImageClassifierSpec.model_validate({"runtime": runtime})
    assert_environment(spec, {"MODEL_BACKEND": expected[0], "MODEL_PRECISION": expected[1]})


def test_a_cpu_limit_reaches_the_container_as_set_and_the_request_stays() -> None:
    """The server sizes its threads from the cgroup quota, which the CPU limit sets."""
    spec = ImageClassifierSpec.model_validate({"resources": {"limits": {"cpu": "4"}}})
    (container,) = builders.build_deployment(OWNER, spec)["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["cpu"] == "4"
    assert container["resources"]["requests"]["cpu"] == "500m"


def test_grpc_is_a_named_port_of_the_pod_and_the_service() -> None:
    spec = ImageClassifierSpec.model_validate({"service": {"grpcPort": 9000}})
    (container,) = builders.build_deployment(OWNER, spec)["spec"]["template"]["spec"]["containers"]
    assert {"name": "grpc", "containerPort": 8081, "protocol": "TCP"} in container["ports"]
    assert_environment(spec, {"GRPC_PORT": "8081"})
    ports = builders.build_service(OWNER, spec)["spec"]["ports"]
    assert ports[1] == {
        "name": "grpc",
        "port": 9000,
        "targetPort": "grpc",
        "protocol": "TCP",
        "appProtocol": "kubernetes.io/h2c",
    }


def test_grpc_off_means_no_grpc_port_anywhere() -> None:
    spec = ImageClassifierSpec.model_validate({"server": {"grpc": False}})
    (container,) = builders.build_deployment(OWNER, spec)["spec"]["template"]["spec"]["containers"]
    assert [port["name"] for port in container["ports"]] == ["http"]
    assert_environment(spec, {"GRPC_PORT": "0"})
    ports = builders.build_service(OWNER, spec)["spec"]["ports"]
    assert [port["name"] for port in ports] == ["http"]


def test_the_page_left_on_sets_no_variable() -> None:
    """On is the server's default: a classifier made before spec.server.page existed keeps its
    pod template, so upgrading the operator rolls out nothing."""
    for server in ({}, {"page": True}):
        spec = ImageClassifierSpec.model_validate({"server": server})
        assert "PAGE" not in {var["name"] for var in builders.server_env(spec)}


def test_every_variable_the_operator_sets_is_refused_in_env() -> None:
    """Else a user variable would override it (PORT: the probes and Service would miss)."""
    spec = ImageClassifierSpec.model_validate({"server": {"maxQueue": 4, "page": False}})
    assert {var["name"] for var in builders.server_env(spec)} <= OWNED_ENV.keys()


def test_partial_resources_reach_the_container_merged() -> None:
    spec = ImageClassifierSpec.model_validate({"resources": {"requests": {"memory": "4Gi"}}})
    (container,) = builders.build_deployment(OWNER, spec)["spec"]["template"]["spec"]["containers"]
    assert container["resources"] == {
        "requests": {"cpu": "500m", "memory": "4Gi"},
        "limits": {"memory": "4Gi"},
    }


def test_pod_annotations_merge_over_prometheus_defaults_and_labels_cannot_hijack() -> None:
    spec = ImageClassifierSpec.model_validate(SPECS["everything"])
    template = builders.build_deployment(OWNER, spec)["spec"]["template"]["metadata"]
    assert template["annotations"].pop(TEMPLATE_HASH)  # see test_status.py
    assert template["annotations"] == {
        "prometheus.io/scrape": "false",
        "prometheus.io/port": "5000",
        "prometheus.io/path": "/metrics",
        "team": "vision",
    }
    assert template["labels"]["team"] == "vision"
    assert template["labels"]["app.kubernetes.io/instance"] == "cats"


def test_gpu_and_scheduling_fields_reach_the_pod() -> None:
    spec = ImageClassifierSpec.model_validate(SPECS["everything"])
    pod = builders.build_deployment(OWNER, spec)["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"accelerator": "nvidia-l4"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert pod["affinity"] == SPECS["everything"]["affinity"]  # typed, yet passed on as given
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["containers"][0]["imagePullPolicy"] == "Always"


@pytest.mark.parametrize(
    ("raw", "current", "replicas"),
    [
        ({"replicas": 3}, None, 3),
        ({"replicas": 0}, 5, 0),
        ({"autoscaling": {"minReplicas": 2, "maxReplicas": 4}}, None, 2),
        ({"autoscaling": {"minReplicas": 2, "maxReplicas": 4}}, 4, 4),  # the HPA's choice stays
    ],
)
def test_replicas_belong_to_the_hpa_when_autoscaling(
    raw: dict[str, Any], current: int | None, replicas: int
) -> None:
    spec = ImageClassifierSpec.model_validate(raw)
    assert builders.build_deployment(OWNER, spec, current)["spec"]["replicas"] == replicas


@pytest.mark.parametrize(
    ("service", "type_", "port", "extra"),
    [
        ({}, "LoadBalancer", 80, {}),
        ({"type": "NodePort", "port": 8080}, "NodePort", 8080, {}),
        (
            {"loadBalancerSourceRanges": ["192.168.0.0/16"]},
            "LoadBalancer",
            80,
            {"loadBalancerSourceRanges": ["192.168.0.0/16"]},
        ),
    ],
)
def test_service(service: dict[str, Any], type_: str, port: int, extra: dict[str, Any]) -> None:
    spec = ImageClassifierSpec.model_validate({"service": service})
    built = builders.build_service(OWNER, spec)["spec"]
    assert built["type"] == type_
    assert built["selector"] == selector_labels("cats")
    assert built["ports"][0] == {
        "name": "http",
        "port": port,
        "targetPort": "http",
        "protocol": "TCP",
    }
    assert extra.items() <= built.items()


def test_hpa_targets_the_deployment_cpu() -> None:
    spec = ImageClassifierSpec.model_validate(
        {"autoscaling": {"minReplicas": 2, "maxReplicas": 8, "targetCPUUtilizationPercentage": 60}}
    )
    hpa = builders.build_hpa(OWNER, spec)
    assert hpa is not None
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "cats",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 8)
    target = hpa["spec"]["metrics"][0]["resource"]
    assert target == {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}
    assert builders.build_hpa(OWNER, ImageClassifierSpec.model_validate({})) is None


@pytest.mark.parametrize(
    ("last", "desired", "patch"),
    [
        ({}, {"a": 1}, {"a": 1}),
        ({"a": 1, "b": 2}, {"a": 1}, {"a": 1, "b": None}),
        ({"m": {"x": "1", "y": "2"}}, {"m": {"y": "3"}}, {"m": {"y": "3", "x": None}}),
        ({"l": [1, 2]}, {"l": [3]}, {"l": [3]}),
        ({"m": {"x": 1}}, {"m": "scalar"}, {"m": "scalar"}),
    ],
)
def test_merge_patch_removes_what_was_dropped(
    last: dict[str, Any], desired: dict[str, Any], patch: dict[str, Any]
) -> None:
    assert builders.merge_patch(last, desired) == patch


@pytest.mark.parametrize(
    ("desired", "current", "expected"),
    [
        ({"a": 1}, {"a": 1, "defaulted": True}, True),
        ({"a": 1}, {"a": 2}, False),
        ({"a": {"b": 1}}, {"a": {}}, False),
        ({"l": [{"n": 1}]}, {"l": [{"n": 1, "x": 0}]}, True),
        ({"l": [{"n": 1}]}, {"l": [{"n": 1}, {"n": 2}]}, False),
        ({"l": [1]}, {"l": "1"}, False),
        ({"cpu": "0.5", "gpu": "1"}, {"cpu": "500m", "gpu": "1"}, True),  # canonicalized
        ({"memory": "1Gi"}, {"memory": "1G"}, False),
        ({"image": "a"}, {"image": "b"}, False),
    ],
)
def test_is_subset(desired: Any, current: Any, expected: bool) -> None:
    assert builders.is_subset(desired, current) is expected


def test_last_applied_round_trips() -> None:
    spec = ImageClassifierSpec.model_validate({})
    desired = builders.build_service(OWNER, spec)
    recorded = builders.with_last_applied(desired)
    assert builders.last_applied(recorded) == desired
    assert builders.is_subset(desired, recorded)
    assert builders.last_applied({"metadata": {"annotations": {LAST_APPLIED: "{"}}}) == {}
