"""The commands the README and guides tell a new user to run name files a fresh clone has."""

import re
from pathlib import Path

import pytest

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
