"""A PersistentVolumeClaim on a folder of this machine, for the end-to-end tests that serve a
model from a pvc:// source."""

import contextlib
from collections.abc import Iterator
from pathlib import Path

from node import NodeCluster


@contextlib.contextmanager
def host_path_claim(
    node_cluster: NodeCluster, folder: Path, namespace: str, claim: str
) -> Iterator[None]:
    """A hostPath PersistentVolume on `folder`, named after the namespace (so unique) and
    reserved for the claim `claim` there, and that claim; the volume is deleted afterwards."""
    volume = f"kubeclassify-{namespace}-{claim}"
    node_cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": volume},
            "spec": {
                "capacity": {"storage": "100Mi"},
                "accessModes": ["ReadOnlyMany"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": str(folder), "type": "Directory"},
                "claimRef": {"namespace": namespace, "name": claim},
            },
        }
    )
    try:
        node_cluster.apply(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": claim},
                "spec": {
                    "accessModes": ["ReadOnlyMany"],
                    "storageClassName": "",
                    "volumeName": volume,
                    "resources": {"requests": {"storage": "100Mi"}},
                },
            },
            namespace,
        )
        yield
    finally:
        node_cluster.kubectl("delete", "persistentvolume", volume, "--wait=false")
