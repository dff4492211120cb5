"""The chart, `charts/kubeclassify`, through the real Helm v4 SDK (helm-python-sdk: Helm's Go
code as a C library, so no `helm` binary): `helm template`, `install`, `uninstall`, `lint` and
`package`, for the chart's tests, the end-to-end suite and CI.

    python tests/support/helm.py package [DESTINATION]   # default dist/; prints the archive
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import helm_python
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "kubeclassify"
# The docs' `helm install kubeclassify charts/kubeclassify -n kubeclassify-system`: with these
# the chart names its objects as deploy/ does.
RELEASE = "kubeclassify"
NAMESPACE = "kubeclassify-system"
# Helm's install order (its kind sorter), for the kinds the chart makes; CRDs go first.
INSTALL_ORDER = (
    "CustomResourceDefinition",
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Deployment",
)
WARNING = 2  # a lint finding's severity: 1 info, 2 warning, 3 error

Manifest = dict[str, Any]
Values = dict[str, Any]


def _templates(values: Values | None, release: str, namespace: str) -> dict[str, str]:
    """Each template's output by path; Helm checks the values against values.schema.json
    first (HelmValuesError names the offending key)."""
    with helm_python.Chart.load(CHART) as chart:
        return chart.render(values or {}, name=release, namespace=namespace, is_install=True)


def render(
    values: Values | None = None, *, release: str = RELEASE, namespace: str = NAMESPACE
) -> list[Manifest]:
    """`helm template --include-crds`: the CRD and every object, in the order Helm installs
    them, ready for `kubectl apply` (the release's namespace must exist, as with Helm)."""
    with helm_python.Chart.load(CHART) as chart:
        crds = [doc for crd in chart.crds for doc in yaml.safe_load_all(crd["data"]) if doc]
    objects = [
        doc
        for path, text in _templates(values, release, namespace).items()
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]
    objects.sort(key=lambda doc: INSTALL_ORDER.index(doc["kind"]))
    return crds + objects


def notes(
    values: Values | None = None, *, release: str = RELEASE, namespace: str = NAMESPACE
) -> str:
    """What `helm install` prints after installing: NOTES.txt, rendered."""
    return next(
        text
        for path, text in _templates(values, release, namespace).items()
        if path.endswith("NOTES.txt")
    )


def install(
    kubeconfig: Path,
    values: Values | None = None,
    *,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
) -> None:
    """`helm install RELEASE charts/kubeclassify -n NAMESPACE --create-namespace`, the docs'
    command, against the cluster of `kubeconfig` (it must be allowed to make the CRD and RBAC)."""
    with helm_python.Config(kubeconfig_path=kubeconfig, namespace=namespace) as config:
        config.install(CHART, release, values, namespace=namespace, create_namespace=True)


def uninstall(kubeconfig: Path, *, release: str = RELEASE, namespace: str = NAMESPACE) -> None:
    """`helm uninstall`: the release's objects go; the CRD stays, as Helm always leaves it."""
    with helm_python.Config(kubeconfig_path=kubeconfig, namespace=namespace) as config:
        config.uninstall(release)


def lint() -> list[dict[str, Any]]:
    """`helm lint --strict`'s findings, each {severity, path, error}."""
    findings: list[dict[str, Any]] = helm_python.lint(CHART, strict=True)["messages"]
    return findings


def package(destination: Path) -> Path:
    """`helm package` into `destination`, once lint finds no warning or error: the archive a
    release pushes to an OCI registry (`helm push ARCHIVE oci://...`)."""
    problems = [finding for finding in lint() if finding["severity"] >= WARNING]
    if problems:
        raise SystemExit(f"helm lint {CHART}: {problems}")
    destination.mkdir(parents=True, exist_ok=True)
    return Path(helm_python.package(CHART, destination=destination))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    pack = commands.add_parser("package", help="lint, then package the chart; print the archive")
    pack.add_argument("destination", type=Path, nargs="?", default=REPO_ROOT / "dist")
    args = parser.parse_args(argv)
    print(package(args.destination))


if __name__ == "__main__":
    main()
