"""The commands the README and guides tell a new user to run name files a fresh clone has."""

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

DOCS = ("README.md", "docs/kubernetes.md", "Makefile")


@pytest.mark.parametrize("doc", DOCS)
def test_every_uploaded_file_in_the_docs_exists_in_the_repository(
    repo_root: Path, doc: str
) -> None:
    uploads = re.findall(r"image=@([^\s\"']+)", (repo_root / doc).read_text())
    assert uploads, f"{doc} shows no upload: update this test"
    missing = [path for path in uploads if not (repo_root / path).is_file()]
    assert not missing, f"{doc} uploads files a fresh clone lacks: {missing}"


def test_the_readme_says_the_images_must_be_built_before_deploying(repo_root: Path) -> None:
    deploy = (repo_root / "README.md").read_text().split("## Deploy on Kubernetes")[1]
    before_apply = deploy.split("kubectl apply -k deploy/")[0]
    for dockerfile in ("Dockerfile.server", "Dockerfile.operator"):
        assert f"docker build -f {dockerfile}" in before_apply


def helm_values(values: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Each value the docs' table describes, by dotted path: a map whose every key the schema
    names (`image`, `resources`) is described key by key, any other value as a whole."""
    described: dict[str, Any] = {}
    for key, value in values.items():
        node = schema["properties"][key]
        if "properties" in node:
            described |= helm_values(value, node, f"{prefix}{key}.")
        else:
            described[f"{prefix}{key}"] = value
    return described


def test_the_helm_values_table_is_values_yaml(repo_root: Path) -> None:
    """The guide's table of the chart's values names every one, with its default."""
    chart = repo_root / "charts" / "kubeclassify"
    values = yaml.safe_load((chart / "values.yaml").read_text())
    schema = json.loads((chart / "values.schema.json").read_text())
    helm = (repo_root / "docs" / "kubernetes.md").read_text().split("### Install with Helm")[1]
    rows = re.findall(r"^\| `([\w.]+)` \| (.*?) \| .+ \|$", helm.split("\n## ")[0], re.MULTILINE)
    table = {name: yaml.safe_load(default.strip("`")) for name, default in rows}
    assert table == helm_values(values, schema)
