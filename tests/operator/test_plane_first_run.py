"""A new user's first run: a clean real cluster with only crds/ applied, nothing else of deploy/.

Replicas elect a leader in a Lease in kubeclassify-system (deploy/'s namespace), which does not
exist here. The operator must neither sit silent nor act unelected: it exits non-zero at once,
naming that namespace and the ways out (create it, --lease-namespace, or --standalone for a
single replica). This needs a plane of its own: the shared one has deploy/'s namespace.
"""

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from control_plane import ControlPlane
from serving import free_port

REPO = Path(__file__).resolve().parents[2]
LEASE_NAMESPACE = "kubeclassify-system"
WAIT = 30


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


def test_without_the_lease_namespace_the_operator_exits_saying_how_to_run(
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
        code = process.wait(WAIT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail(f"still running after {WAIT} s without a Lease:\n{log_path.read_text()}")
    output = log_path.read_text()
    assert code != 0 and output.strip(), output
    last = output.strip().splitlines()[-1]  # the reason, as the process's last words
    assert LEASE_NAMESPACE in last and "--lease-namespace" in last and "--standalone" in last, (
        output
    )
    made = bare_plane.kubectl("get", "deployment", "resnet", "-n", "first-run", check=False)
    assert made.returncode != 0, "the operator acted without being elected"
