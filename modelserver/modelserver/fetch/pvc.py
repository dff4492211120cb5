"""`pvc://claim/path`: a file on a PersistentVolumeClaim that the pod mounts.

The operator mounts a pvc:// source read-only and points the server at it, no copy. This
module is for running `modelserver fetch` on it anyway (to check its sha256, or to copy it
into an emptyDir): the claim must be mounted at MODEL_PVC_ROOT/<claim> (default /mnt/pvc).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from urllib.parse import unquote

from .core import FetchError, Location, Sink
from .local import copy

DEFAULT_ROOT = "/mnt/pvc"
# A claim's name is a DNS-1123 subdomain.
CLAIM_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def download(location: Location, sink: Sink, env: Mapping[str, str], timeout_s: float) -> None:
    copy(location, mounted_path(location, env), sink)


def mounted_path(location: Location, env: Mapping[str, str]) -> Path:
    """Where the claim's file is in this container, refusing paths that climb out of it."""
    claim, path = location.authority, PurePosixPath(unquote(location.path))
    if not CLAIM_NAME.fullmatch(claim) or len(claim) > 253:
        raise FetchError(f"{location.shown}: expected pvc://CLAIM-NAME/PATH")
    if ".." in path.parts or not path.name or "?" in location.uri:
        raise FetchError(f"{location.shown}: expected a file path inside the claim")
    root = Path(env.get("MODEL_PVC_ROOT") or DEFAULT_ROOT) / claim
    if not root.is_dir():
        raise FetchError(
            f"{location.shown}: claim {claim!r} is not mounted at {root} (the operator mounts "
            "pvc:// sources read-only in the server's pod; MODEL_PVC_ROOT says where claims are)"
        )
    return root / path.relative_to("/")
