"""The Gateway API's CRDs (`../shared/gateway-api/`, the official standard channel) on a test
plane: installed for the canary's Gateway mode, removed to check the operator without them.

No Gateway implementation runs on these machines: the API server validates HTTPRoutes as a
cluster with the Gateway API installed would, and nothing routes by them.
"""

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from control_plane import REPO_ROOT, ControlPlane, PlaneError

SHARED = Path(os.environ.get("KUBECLASSIFY_SHARED", REPO_ROOT.parent / "shared"))
GATEWAY_API = SHARED / "gateway-api"
CRDS = ("gatewayclasses", "gateways", "httproutes", "grpcroutes", "referencegrants")
GROUP = "gateway.networking.k8s.io"


def available() -> bool:
    return (GATEWAY_API / "httproutes.yaml").exists()


def install(plane: ControlPlane) -> None:
    """Apply the CRDs (server-side: the HTTPRoute CRD is too large for the last-applied
    annotation of a client-side apply) and wait until they serve."""
    plane.kubectl("apply", "--server-side", "--force-conflicts", f"--filename={GATEWAY_API}")
    plane.wait_crds_established()
    _wait(plane, lambda: served(plane), "the Gateway API to be served")


def uninstall(plane: ControlPlane) -> None:
    """Delete the CRDs (and with them every Gateway API object) and wait until they are gone."""
    names = [f"{crd}.{GROUP}" for crd in CRDS]
    plane.kubectl("delete", "crd", "--ignore-not-found", "--wait=true", *names, timeout=120)
    _wait(plane, lambda: not served(plane), "the Gateway API to be gone")


def served(plane: ControlPlane) -> bool:
    """Whether discovery lists HTTPRoutes (what the operator asks before writing one)."""
    done = plane.kubectl("get", "--raw", f"/apis/{GROUP}/v1", check=False)
    if done.returncode != 0:
        return False
    resources = json.loads(done.stdout).get("resources", [])
    return any(resource["name"] == "httproutes" for resource in resources)


def _wait(plane: ControlPlane, probe: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise PlaneError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)
