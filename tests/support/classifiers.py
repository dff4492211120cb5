"""ImageClassifier manifests as a user writes them, for tests that `kubectl apply` them."""

from typing import Any

import yaml


def classifier(name: str, spec: dict[str, Any]) -> str:
    """The YAML of an ImageClassifier `name` with this spec (no namespace: kubectl's -n)."""
    return yaml.safe_dump(
        {
            "apiVersion": "kubeclassify.io/v1alpha1",
            "kind": "ImageClassifier",
            "metadata": {"name": name},
            "spec": spec,
        }
    )
