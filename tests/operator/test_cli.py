"""The `kubeclassify-operator` command line: defaults, the `crd` command, start-up errors."""

import asyncio
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml
from kubeclassify_operator.cli import (
    DEFAULT_LIVENESS,
    LEASE_NAME,
    LEASE_NAMESPACE,
    lease_name,
    parse_args,
)
from kubeclassify_operator.probe import LivenessProbe
from serving import free_port

COMMAND = Path(sys.executable).parent / "kubeclassify-operator"


def test_runs_cluster_wide_with_leader_election_and_liveness_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    args = parse_args([])
    assert args.command is None  # `run` is the default
    assert args.namespace == []
    assert args.liveness == DEFAULT_LIVENESS == "http://0.0.0.0:8080/healthz"
    assert not args.standalone and args.lease is None
    assert args.lease_namespace == LEASE_NAMESPACE == "kubeclassify-system"
    monkeypatch.setenv("POD_NAMESPACE", "ops")  # deploy/ sets it: the Lease is next to the pod
    assert parse_args([]).lease_namespace == "ops"


def test_namespaces_and_standalone() -> None:
    args = parse_args(["run", "--namespace", "a", "--namespace", "b", "--standalone"])
    assert args.namespace == ["a", "b"]
    assert args.standalone


def test_operators_for_different_namespaces_elect_in_different_leases() -> None:
    assert lease_name([]) == LEASE_NAME == "kubeclassify-operator"
    assert lease_name(["b", "a", "b"]) == "kubeclassify-operator-a-b"
    long = lease_name([f"team-{i:03d}-" + "x" * 50 for i in range(5)])
    assert len(long) <= 253 and long.startswith("kubeclassify-operator-")


def test_console_script_prints_the_crd() -> None:
    out = subprocess.run([str(COMMAND), "crd"], check=True, capture_output=True, text=True).stdout
    crd = yaml.safe_load(out)
    assert crd["metadata"]["name"] == "imageclassifiers.kubeclassify.io"


def test_a_taken_liveness_port_is_one_line_naming_the_option(tmp_path: Path) -> None:
    """Not an OSError traceback from deep inside kopf: a one-line error and a non-zero exit."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        url = f"http://127.0.0.1:{taken.getsockname()[1]}/healthz"
        done = subprocess.run(
            [str(COMMAND), "--standalone", "--liveness", url],
            capture_output=True,
            text=True,
            timeout=60,
            env={"KUBECONFIG": str(tmp_path / "none"), "PATH": "/usr/bin:/bin"},
        )
    assert done.returncode != 0
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert "--liveness" in lines[0] and url in lines[0] and "in use" in lines[0]


def test_liveness_is_standby_then_whether_the_event_loop_responds() -> None:
    url = f"http://127.0.0.1:{free_port()}/healthz"
    probe = LivenessProbe(url)
    try:
        answer = requests.get(url, timeout=5)
        assert answer.status_code == 200 and answer.json() == {"standby": True}
        assert requests.get(url.replace("/healthz", "/other"), timeout=5).status_code == 404

        async def lead() -> None:
            probe.loop = asyncio.get_running_loop()
            answer = await asyncio.to_thread(requests.get, url, timeout=5)
            assert answer.status_code == 200 and answer.json() == {"operator": True}

        asyncio.run(lead())
        answer = requests.get(url, timeout=5)  # that loop is closed: the operator is gone
        assert answer.status_code == 503
    finally:
        probe.close()
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=5)
