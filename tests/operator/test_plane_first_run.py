"""A new user's first run: a clean real cluster with only crds/ applied, nothing else of deploy/.

The operator must not sit silent (it once did: kopf paused every watch while its peering CRD
was missing, and said so only at DEBUG level). Replicas now elect a leader in a Lease in
kubeclassify-system, which does not exist yet: either the operator works anyway and says so
at WARNING level, or it exits non-zero naming that namespace and --standalone. This needs a
plane of its own: the shared one has deploy/'s namespace installed.
"""

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from control_plane import ControlPlane
from serving import free_port

REPO = Path(__file__).resolve().parents[2]
LEASE_NAMESPACE = "kubeclassify-system"


@pytest.fixture(scope="module")
def bare_plane() -> Iterator[ControlPlane]:
    """A fresh control plane with nothing but crds/ applied."""
    plane = ControlPlane.start()
    try:
        plane.kubectl("apply", "-f", str(REPO / "crds" / "imageclassifier.yaml"))
        plane.wait_crds_established()
        yield plane
    finally:
        plane.down()


def test_without_peering_crds_the_operator_works_or_says_why_not(
    bare_plane: ControlPlane, tmp_path: Path
) -> None:
    command = shutil.which("kubeclassify-operator", path=str(Path(sys.executable).parent))
    assert command, "install the operator: pip install -e operator"
    bare_plane.kubectl("create", "namespace", "first-run")
    bare_plane.kubectl("apply", "-n", "first-run", "-f", str(REPO / "examples" / "minimal.yaml"))
    log_path = tmp_path / "operator.log"
    env = {**os.environ, "KUBECONFIG": str(bare_plane.admin_kubeconfig), "POD_ID": "first-run"}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [command, "--liveness", f"http://127.0.0.1:{free_port()}/healthz"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        made = None
        while process.poll() is None and time.monotonic() < deadline:
            made = (
                bare_plane.kubectl(
                    "get", "deployment", "resnet", "-n", "first-run", check=False
                ).returncode
                == 0
            )
            if made:
                break
            time.sleep(1)
        output = log_path.read_text()
        if process.poll() is not None:
            # Refused to run: it must say why, and how to fix it.
            assert process.returncode != 0, output
            assert LEASE_NAMESPACE in output and "--standalone" in output, output
        else:
            # Runs: standalone, and it must have said so at WARNING level with the way out.
            assert made, f"the operator ran silently for 30 s and did nothing:\n{output}"
            warnings = [line for line in output.splitlines() if "WARNING" in line]
            assert any(LEASE_NAMESPACE in line for line in warnings), output
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
