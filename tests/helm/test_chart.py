"""The chart through the real Helm SDK, offline: lint, the values' schema, what each value
renders, and one source of truth: with its defaults the chart makes exactly what
`kubectl kustomize deploy/` makes."""

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import helm
import helm_python
import kubernetes_validate
import pytest
import yaml
from kubeclassify_operator.crd import render_crd

REPO = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.37.0"  # as tests/operator/test_manifests.py validates deploy/
PROJECT = tomllib.loads((REPO / "operator" / "pyproject.toml").read_text())["project"]
Manifest = dict[str, Any]
Key = tuple[str, str, str]  # kind, namespace, name
# The only object of deploy/ the chart does not make: Helm makes the release's namespace
# (--create-namespace), and a chart that made it too would fail to install there.
NOT_IN_CHART = ("Namespace", "", helm.NAMESPACE)
# Helm's recommended labels, which `standardLabels: true` adds to every object's metadata.
STANDARD_LABELS = {
    "helm.sh/chart": f"kubeclassify-{PROJECT['version']}",
    "app.kubernetes.io/instance": helm.RELEASE,
    "app.kubernetes.io/version": PROJECT["version"],
    "app.kubernetes.io/managed-by": "Helm",
}


def by_key(manifests: list[Manifest]) -> dict[Key, Manifest]:
    keyed = {
        (m["kind"], m["metadata"].get("namespace", ""), m["metadata"]["name"]): m for m in manifests
    }
    assert len(keyed) == len(manifests), "two objects with one name"
    return keyed


def kustomized() -> list[Manifest]:
    """`kubectl kustomize deploy/`: what `kubectl apply -k deploy/` applies."""
    built = subprocess.run(
        [str(Path(sys.executable).parent / "kubectl"), "kustomize", str(REPO / "deploy")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(built) if doc]


def deployment(manifests: list[Manifest]) -> Manifest:
    (found,) = (m for m in manifests if m["kind"] == "Deployment")
    return found


def test_defaults_render_exactly_what_deploy_applies() -> None:
    chart = by_key(helm.render())
    deploy = by_key(kustomized())
    assert sorted(deploy.keys() - chart.keys()) == [NOT_IN_CHART]
    assert sorted(chart.keys() - deploy.keys()) == []
    for key, made in chart.items():
        assert made == deploy[key], f"{key}: the chart and deploy/ differ"


def test_standard_labels_are_added_on_request_and_change_nothing_else() -> None:
    plain = by_key(helm.render())
    labelled = by_key(helm.render({"standardLabels": True}))
    assert labelled.keys() == plain.keys()
    for key, made in labelled.items():
        if key[0] == "CustomResourceDefinition":  # crds/ is not templated
            assert made == plain[key]
            continue
        labels = made["metadata"].pop("labels")
        assert labels == plain[key]["metadata"].pop("labels") | STANDARD_LABELS, key
        assert made == plain[key], key


def test_the_charts_crd_is_the_generated_one() -> None:
    crd = (helm.CHART / "crds" / "imageclassifier.yaml").read_text()
    assert crd == render_crd(), (
        "copy crds/imageclassifier.yaml (`make crd`) to charts/kubeclassify/crds/"
    )


def test_the_chart_is_versioned_with_the_operator() -> None:
    chart = yaml.safe_load((helm.CHART / "Chart.yaml").read_text())
    assert chart["version"] == chart["appVersion"] == PROJECT["version"]
    image = deployment(helm.render())["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"ghcr.io/kubeclassify/operator:{PROJECT['version']}"


def test_lint_is_clean() -> None:
    # `icon is recommended`, an info: the project publishes no icon to point at.
    assert helm.lint() == [{"severity": 1, "path": "Chart.yaml", "error": "icon is recommended"}]


def test_the_quantity_pattern_is_the_crds() -> None:
    """Resources the CRD would refuse on a classifier, the chart refuses for the operator."""
    schema = helm_python.Chart.load(helm.CHART).schema
    assert schema is not None
    ours = schema["definitions"]["quantities"]["additionalProperties"]["pattern"]
    crd = yaml.safe_load(render_crd())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    limits = crd["properties"]["spec"]["properties"]["resources"]["properties"]["limits"]
    assert ours == limits["additionalProperties"]["pattern"]


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"replicas": -1}, "/replicas"),
        ({"replicas": "two"}, "/replicas"),
        ({"replica": 3}, "additional properties 'replica'"),
        ({"logLevel": "trace"}, "/logLevel"),
        ({"watchNamespaces": "team-a"}, "/watchNamespaces"),
        ({"watchNamespaces": ["Team_A"]}, "/watchNamespaces/0"),
        ({"watchNamespaces": ["team-a", "team-a"]}, "/watchNamespaces"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"image": {"repository": ""}}, "/image/repository"),
        ({"image": {"tag": 1}}, "/image/tag"),
        ({"resources": {"limits": {"memory": "lots"}}}, "/resources/limits/memory"),
        ({"resources": {"requests": {"cpu": -1}}}, "/resources/requests/cpu"),
        ({"resources": {"limit": {"memory": "1Gi"}}}, "additional properties 'limit'"),
        ({"labels": {"app.kubernetes.io/name": "mine"}}, "/labels/app.kubernetes.io~1name"),
        ({"podLabels": {"team": 7}}, "/podLabels/team"),
        ({"nodeSelector": {"gpu": True}}, "/nodeSelector/gpu"),
        ({"tolerations": {"key": "gpu"}}, "/tolerations"),
        ({"imagePullSecrets": ["ghcr-pull"]}, "/imagePullSecrets/0"),
        ({"standardLabels": "yes"}, "/standardLabels"),
        ({"serverImages": {"openvino": "has space"}}, "/serverImages/openvino"),
        ({"serverImages": {"tf": "reg/ms:1"}}, "additional properties 'tf'"),
    ],
)
def test_the_schema_refuses_bad_values(values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm_python.HelmValuesError, match="schema") as refused:
        helm.render(values)
    assert where in str(refused.value)


def test_values_reach_the_operator_pod() -> None:
    values = {
        "image": {
            "repository": "registry.example/kc/operator",
            "tag": "dev",
            "pullPolicy": "Never",
        },
        "imagePullSecrets": [{"name": "pull"}],
        "replicas": 3,
        "logLevel": "debug",
        "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi"}},
        "podSecurityContext": {"fsGroup": 10001},
        "securityContext": {"runAsUser": 20002},
        "nodeSelector": {"pool": "system"},
        "tolerations": [{"key": "system", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
        "labels": {"team": "ml"},
        "annotations": {"owner": "ml@example.com"},
        "podLabels": {"team": "ml-pods", "tier": "control"},
        "podAnnotations": {"scrape": "no"},
        "serverImages": {"openvino": "registry.example/kc/ms:1", "tensorflow": "r.example/tf:1"},
    }
    manifests = helm.render(values)
    made = deployment(manifests)
    assert made["spec"]["replicas"] == 3
    assert made["metadata"]["annotations"] == {"owner": "ml@example.com"}
    template = made["spec"]["template"]
    assert template["metadata"]["labels"] == {
        "app.kubernetes.io/name": "kubeclassify-operator",
        "team": "ml-pods",  # the pods' own label wins
        "tier": "control",
    }
    assert template["metadata"]["annotations"] == {"scrape": "no"}
    pod = template["spec"]
    for field in ("imagePullSecrets", "nodeSelector", "tolerations", "affinity"):
        assert pod[field] == values[field], field
    # Helm merges a map given with the default one: a key is dropped by setting it to null.
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
        "fsGroup": 10001,
    }
    (container,) = pod["containers"]
    assert container["image"] == "registry.example/kc/operator:dev"
    assert container["imagePullPolicy"] == "Never"
    assert container["args"] == ["--liveness", "http://0.0.0.0:8080/healthz", "--verbose"]
    assert container["env"][2:] == [  # after POD_ID and POD_NAMESPACE; the GPU's left unset
        {"name": "KUBECLASSIFY_SERVER_IMAGE", "value": "registry.example/kc/ms:1"},
        {"name": "KUBECLASSIFY_SERVER_IMAGE_TENSORFLOW", "value": "r.example/tf:1"},
    ]
    assert container["resources"] == {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"memory": "1Gi"},
    }
    assert container["securityContext"]["runAsUser"] == 20002
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    for made_object in manifests[1:]:  # every object but the CRD
        assert made_object["metadata"]["labels"]["team"] == "ml", made_object["kind"]
        assert made_object["metadata"]["annotations"] == values["annotations"]


def test_a_null_value_drops_a_default() -> None:
    values = {
        "resources": {"requests": {"cpu": None}},
        "podSecurityContext": {"seccompProfile": None},
    }
    pod = deployment(helm.render(values))["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["requests"] == {"memory": "128Mi"}
    assert pod["securityContext"] == {"runAsNonRoot": True}


def rules(role: Manifest) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_watched_namespaces_get_roles_not_a_cluster_role() -> None:
    cluster_wide = by_key(helm.render())
    granted = rules(cluster_wide[("ClusterRole", "", "kubeclassify-operator")])
    made = by_key(helm.render({"watchNamespaces": ["team-a", "team-b"]}))

    (cluster_role,) = (m for m in made.values() if m["kind"] == "ClusterRole")
    discovery = {
        ("apiextensions.k8s.io", "customresourcedefinitions", verb) for verb in ("list", "watch")
    } | {("", "namespaces", verb) for verb in ("list", "watch")}
    assert rules(cluster_role) == discovery, "cluster-wide, only what kopf must read"
    for namespace in ("team-a", "team-b"):
        role = made[("Role", namespace, "kubeclassify-operator")]
        assert rules(role) == granted - discovery
        binding = made[("RoleBinding", namespace, "kubeclassify-operator")]
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "kubeclassify-operator",
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "kubeclassify-operator", "namespace": helm.NAMESPACE}
        ]
    assert ("Role", helm.NAMESPACE, "kubeclassify-operator-leader") in made
    assert sorted(k[1] for k in made if k[0] == "Role") == sorted(
        ["team-a", "team-b", helm.NAMESPACE]
    )
    args = deployment(list(made.values()))["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[2:] == ["--namespace", "team-a", "--namespace", "team-b"]


def test_another_release_names_everything_after_itself() -> None:
    """Two releases never share a cluster-scoped name, nor select each other's pods."""
    made = helm.render(release="team-a", namespace="team-a-system")
    for manifest in made[1:]:
        assert manifest["metadata"]["name"].startswith("team-a-operator"), manifest["kind"]
        assert manifest["metadata"]["labels"] == {"app.kubernetes.io/name": "team-a-operator"}
    selector = deployment(made)["spec"]["selector"]["matchLabels"]
    assert selector == {"app.kubernetes.io/name": "team-a-operator"}


@pytest.mark.parametrize(
    "values",
    [{}, {"watchNamespaces": ["team-a"], "standardLabels": True, "labels": {"team": "ml"}}],
    ids=["defaults", "namespaced"],
)
def test_every_object_is_valid_kubernetes(values: dict[str, Any]) -> None:
    for manifest in helm.render(values):
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def test_notes_tell_the_next_steps() -> None:
    cluster_wide = helm.notes()
    assert "watching the whole cluster" in cluster_wide
    assert (
        f"kubectl -n {helm.NAMESPACE} rollout status deployment/kubeclassify-operator"
        in cluster_wide
    )
    assert "kubectl apply -f examples/minimal.yaml" in cluster_wide
    assert "kubectl apply -f charts/kubeclassify/crds/imageclassifier.yaml" in cluster_wide
    namespaced = helm.notes({"watchNamespaces": ["team-a", "team-b"]})
    assert "watching only the namespaces team-a, team-b" in namespaced
    assert "kubectl apply -n team-a -f examples/minimal.yaml" in namespaced


def test_the_docs_label_the_namespace_as_deploy_does() -> None:
    """Helm's --create-namespace makes a bare namespace: the docs add deploy/'s Pod Security."""
    (namespace,) = (m for m in kustomized() if m["kind"] == "Namespace")
    security = {k: v for k, v in namespace["metadata"]["labels"].items() if "pod-security" in k}
    assert security
    for doc in ("README.md", "docs/kubernetes.md"):
        text = (REPO / doc).read_text()
        assert f"helm install {helm.RELEASE} charts/kubeclassify -n {helm.NAMESPACE}" in text
        for label, value in security.items():
            assert f"kubectl label namespace {helm.NAMESPACE} {label}={value}" in text, doc


def test_the_package_is_the_chart(tmp_path: Path) -> None:
    archive = helm.package(tmp_path)
    assert archive == tmp_path / f"kubeclassify-{PROJECT['version']}.tgz"
    with helm_python.Chart.load(archive) as packaged, helm_python.Chart.load(helm.CHART) as chart:
        assert packaged.crds == chart.crds
        assert packaged.schema == chart.schema
        assert packaged.values == chart.values
        assert packaged.render({}, name="kc", namespace="ns") == chart.render(
            {}, name="kc", namespace="ns"
        )
