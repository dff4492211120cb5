"""The checked-in YAML: CRD drift and structure, deploy/ via kustomize, examples, the Dockerfile."""

import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from fake_kube import FakeKube
from kubeclassify_operator import builders
from kubeclassify_operator.builders import Owner
from kubeclassify_operator.crd import build_crd, render_crd
from kubeclassify_operator.images import ServerImages
from kubeclassify_operator.kube import CLASSIFIERS, DEPLOYMENTS, HPAS, SERVICES
from kubeclassify_operator.reconcile import reconcile
from kubeclassify_operator.rules import NAME_MAX_LENGTH, NAME_PATTERN, OWNED_ENV
from kubeclassify_operator.spec import parse_spec

REPO = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.37.0"
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


def crd_schema() -> dict[str, Any]:
    crd = yaml.safe_load((REPO / "crds" / "imageclassifier.yaml").read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_checked_in_crd_matches_the_pydantic_spec() -> None:
    checked_in = (REPO / "crds" / "imageclassifier.yaml").read_text()
    assert checked_in == render_crd(), "run `make crd` to regenerate crds/imageclassifier.yaml"


def test_crd_command_writes_the_same_file(tmp_path: Path) -> None:
    out = tmp_path / "crd.yaml"
    subprocess.run(
        [sys.executable, "-m", "kubeclassify_operator", "crd", "--output", str(out)], check=True
    )
    assert out.read_text() == render_crd()


def test_crd_is_valid_kubernetes() -> None:
    kubernetes_validate.validate(build_crd(), K8S_VERSION, strict=True)


def nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, prop in schema.get("properties", {}).items():
        yield from nodes(prop, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield from nodes(schema[key], f"{path}[{key}]")


def test_crd_schema_is_structural() -> None:
    """The API server's structural-schema rules, which kubernetes-validate does not check."""
    for path, node in nodes(crd_schema()):
        assert not {"$ref", "title", "const", "$defs"} & node.keys(), path
        if node.get("x-kubernetes-int-or-string"):
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
        else:
            assert "type" in node, f"{path} has no type"
            assert "anyOf" not in node, path
        assert not ("properties" in node and "additionalProperties" in node), path
        if "default" in node:  # defaults must pass their own schema
            jsonschema.validate(node["default"], node)


def test_crd_api_surface() -> None:
    crd = build_crd()
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["singular"]) == (
        "ImageClassifier",
        "imageclassifiers",
        "imageclassifier",
    )
    assert names["shortNames"] == ["ic"] and crd["spec"]["scope"] == "Namespaced"
    (version,) = crd["spec"]["versions"]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    }
    columns = [c["name"].upper() for c in version["additionalPrinterColumns"]]
    assert columns == ["MODEL", "REPLICAS", "READY", "CANARY", "ENDPOINT", "STATUS", "AGE"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert spec["model"].items() >= {"default": "resnet50", "enum": ["resnet50"]}.items()
    assert spec["replicas"]["minimum"] == 0 and spec["replicas"]["default"] == 1
    assert spec["service"]["properties"]["type"]["enum"] == [
        "LoadBalancer",
        "ClusterIP",
        "NodePort",
    ]
    assert "targetCPUUtilizationPercentage" in spec["autoscaling"]["properties"]


def properties(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every field of the schema (a property at any depth), by its kubectl-explain path."""
    for name, prop in schema.get("properties", {}).items():
        yield f"{path}.{name}", prop
        yield from properties(prop, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield from properties(schema[key], path)


@pytest.mark.parametrize("part", ["spec", "status"])
def test_every_field_is_described(part: str) -> None:
    """`kubectl explain imageclassifier.spec` shows a description, not `<no description>`."""
    root = crd_schema()["properties"][part]
    fields = dict(properties(root, part))
    assert len(fields) > 20 if part == "spec" else len(fields) > 8
    undescribed = [path for path, node in fields.items() if not node.get("description")]
    assert not undescribed
    broken = [p for p, node in fields.items() if re.search(r"[^\n]\n[^\n]", node["description"])]
    assert not broken, "a docstring's line breaks reached the description"


def test_defaults_are_in_the_descriptions() -> None:
    """`kubectl explain` shows no `default:`, so the description says it."""
    spec = crd_schema()["properties"]["spec"]
    defaulted = {path: node for path, node in properties(spec, "spec") if node.get("default")}
    assert {"spec.replicas", "spec.imagePullPolicy", "spec.resources", "spec.server.topK"} <= set(
        defaulted
    )
    for path, node in defaulted.items():
        assert node["description"].endswith(f"Defaults to {json.dumps(node['default'])}."), path
    assert spec["properties"]["replicas"]["description"].endswith("Defaults to 1.")


def official_schema(name: str) -> dict[str, Any]:
    """A type's schema in the Kubernetes version the manifests are checked against."""
    folder = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    strict = folder / f"v{K8S_VERSION}-local-strict"
    definitions = json.loads((strict / "_definitions.json").read_text())["$defs"]
    found: dict[str, Any] = definitions[name]
    return found


def same_fields(ours: dict[str, Any], theirs: dict[str, Any], path: str) -> Iterator[str]:
    """Differences in field names (and required fields) between two schemas, recursively."""
    if "$ref" in theirs:
        theirs = official_schema(theirs["$ref"].rsplit("/", 1)[-1])
    if "items" in theirs:
        yield from same_fields(ours.get("items", {}), theirs["items"], f"{path}[]")
        return
    mine, official = ours.get("properties", {}), theirs.get("properties", {})
    if mine.keys() != official.keys():
        yield f"{path}: {sorted(mine)} != {sorted(official)}"
    if set(ours.get("required", [])) != set(theirs.get("required", [])):
        yield f"{path}: required {ours.get('required')} != {theirs.get('required')}"
    for name in mine.keys() & official.keys():
        yield from same_fields(mine[name], official[name], f"{path}.{name}")


def test_affinity_is_typed_as_kubernetes_types_it() -> None:
    """Typed, so a misspelt key is refused rather than dropped; complete, so none is lost."""
    affinity = crd_schema()["properties"]["spec"]["properties"]["affinity"]
    assert "x-kubernetes-preserve-unknown-fields" not in affinity
    assert not list(same_fields(affinity, official_schema("io.k8s.api.core.v1.Affinity"), "."))


def test_cel_rules_reach_the_crd() -> None:
    """The rules `kubectl apply` enforces (their behaviour is tested on a real API server)."""
    root = crd_schema()
    spec = root["properties"]["spec"]["properties"]
    (name_rule,) = root["x-kubernetes-validations"]
    assert name_rule["fieldPath"] == ".metadata.name"
    assert f"<= {NAME_MAX_LENGTH}" in name_rule["rule"] and NAME_PATTERN in name_rule["rule"]
    (env_rule,) = spec["env"]["items"]["x-kubernetes-validations"]
    assert all(f'"{name}"' in env_rule["rule"] for name in OWNED_ENV)
    assert len(spec["resources"]["x-kubernetes-validations"]) == 2


@pytest.mark.parametrize(
    ("spec", "valid"),
    [
        ({}, True),
        ({"replicas": -1}, False),
        ({"model": "vgg"}, False),
        ({"service": {"type": "ExternalName"}}, False),
        ({"service": {"port": 70000}}, False),
        ({"resources": {"limits": {"memory": "lots"}}}, False),
        ({"resources": {"requests": {"cpu": "-1"}}}, False),
        ({"resources": {"requests": {"cpu": -1}}}, False),
        ({"resources": {"requests": {"cpu": "1e-3", "memory": "+1Gi"}}}, True),
        ({"resources": {"limits": {"memory": "2Gi", "nvidia.com/gpu": 1}}}, True),
        ({"server": {"topK": 0}}, False),
        ({"env": [{"name": "1BAD"}]}, False),
        ({"autoscaling": {"minReplicas": 1}}, False),  # maxReplicas is required
        ({"service": {"loadBalancerSourceRanges": ["not-a-cidr"]}}, False),
    ],
)
def test_crd_schema_rejects_nonsense(spec: dict[str, Any], valid: bool) -> None:
    body = {"apiVersion": "kubeclassify.io/v1alpha1", "kind": "ImageClassifier", "spec": spec}
    errors = list(jsonschema.Draft7Validator(crd_schema()).iter_errors(body))
    assert (not errors) is valid, errors


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_pass_the_crd_schema_and_build_valid_children(path: Path) -> None:
    example = yaml.safe_load(path.read_text())
    jsonschema.validate(example, crd_schema())
    spec = parse_spec(example["spec"])
    owner = Owner(name=example["metadata"]["name"], namespace="default", uid="u-1")
    children = [builders.build_deployment(owner, spec), builders.build_service(owner, spec)]
    children += [hpa for hpa in [builders.build_hpa(owner, spec)] if hpa]
    for child in children:
        kubernetes_validate.validate(child, K8S_VERSION, strict=True)


def test_minimal_example_is_three_lines_of_spec() -> None:
    text = (REPO / "examples" / "minimal.yaml").read_text()
    spec_lines = text.split("spec:\n", 1)[1].strip().splitlines()
    assert len(spec_lines) == 3


def test_gpu_example_gives_each_pod_a_gpu_and_scales_on_cpu() -> None:
    """What the example's comment says, in the children a pass makes of it: a GPU per pod on
    a GPU node, 1 to 4 replicas by CPU load (an HPA has no GPU metric without an adapter),
    reachable from 10.0.0.0/8 only."""
    example = yaml.safe_load((REPO / "examples" / "autoscaling-gpu.yaml").read_text())
    name = example["metadata"]["name"]
    kube = FakeKube()
    kube.classifier(name, example["spec"])
    body = kube.get(CLASSIFIERS, "default", name)
    assert body is not None
    reconcile(kube, body, lambda *_: None)

    deployment, hpa, service = (
        kube.get(kind, "default", name) for kind in (DEPLOYMENTS, HPAS, SERVICES)
    )
    assert deployment is not None and hpa is not None and service is not None
    pod = deployment["spec"]["template"]["spec"]
    resources = pod["containers"][0]["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == "1"
    assert pod["containers"][0]["image"] == ServerImages().gpu  # the operator's choice
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 4)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
    assert service["spec"]["loadBalancerSourceRanges"] == ["10.0.0.0/8"]


def kustomized() -> list[dict[str, Any]]:
    kubectl = Path(sys.executable).parent / "kubectl"
    built = subprocess.run(
        [str(kubectl), "kustomize", str(REPO / "deploy")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(built) if doc]


def test_deploy_kustomization_builds_valid_kubernetes() -> None:
    docs = kustomized()
    kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs)
    assert kinds == [
        "ClusterRole/kubeclassify-operator",
        "ClusterRoleBinding/kubeclassify-operator",
        "CustomResourceDefinition/imageclassifiers.kubeclassify.io",
        "Deployment/kubeclassify-operator",
        "Namespace/kubeclassify-system",
        "Role/kubeclassify-operator-leader",
        "RoleBinding/kubeclassify-operator-leader",
        "ServiceAccount/kubeclassify-operator",
    ]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    crd = next(d for d in docs if d["metadata"]["name"] == "imageclassifiers.kubeclassify.io")
    assert crd == build_crd()


def test_operator_deployment_runs_the_console_command_non_root() -> None:
    deployment = next(d for d in kustomized() if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["serviceAccountName"] == "kubeclassify-operator"
    assert container["image"] == "ghcr.io/kubeclassify/operator:0.1.0"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "--liveness" in container["args"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["runAsUser"] != 0 and security["runAsGroup"] != 0
    assert "privileged" not in security or security["privileged"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


def test_dockerfile_copies_existing_files_and_runs_the_console_script() -> None:
    dockerfile = (REPO / "Dockerfile.operator").read_text()
    copies = re.findall(r"^COPY\s+(\S+)\s+\S+$", dockerfile, flags=re.MULTILINE)
    assert copies, "no COPY instructions"
    for source in copies:
        assert (REPO / source).exists(), f"COPY source {source} is missing"
        assert source.startswith("operator/"), f"{source}: the image must hold only the operator"
    (entrypoint,) = re.findall(r"^ENTRYPOINT\s+\[\"([^\"]+)\"\]", dockerfile, flags=re.MULTILINE)
    project = tomllib.loads((REPO / "operator" / "pyproject.toml").read_text())["project"]
    assert project["scripts"][entrypoint] == "kubeclassify_operator.cli:main"
    assert not any("tensorflow" in dep.lower() for dep in project["dependencies"])
    assert re.search(r"^RUN pip install \./operator", dockerfile, flags=re.MULTILINE)
    (user,) = re.findall(r"^USER\s+(\S+)$", dockerfile, flags=re.MULTILINE)
    assert not user.startswith(("0", "root"))


def test_server_pods_run_as_the_user_the_server_image_declares() -> None:
    """The pod's runAsUser is the Dockerfile's non-root USER (each image's), so its files stay
    readable."""
    dockerfile = (REPO / "Dockerfile.server").read_text()
    users = set(re.findall(r"^USER\s+(\d+)", dockerfile, flags=re.MULTILINE))
    assert users == {str(builders.SERVER_USER_ID)} and builders.SERVER_USER_ID != 0
