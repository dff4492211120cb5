"""A real node (`../shared/k8s/node/`) on a control plane of its own, for the end-to-end tests.

`NodeCluster.start()` builds the images (scripts/build-images.sh: cached layers, seconds when
nothing changed), starts a FRESH plane with NODE_IP on free ports and its own run directory
(never the plane tests/operator share: there tests play the kubelet, so no real one may join),
joins the node (containerd, runc, kubelet, kube-proxy: pods really run, probes and cgroups are
real) and imports the images into it. The node is one per machine (its bridge, address, state
directory and ports are fixed), so a node serving another live plane is refused, not taken.

Traffic goes only to 127.0.0.1 node ports, pod IPs on the bridge (10.244.0.0/24) and the node
IP: never any other address.

Run by hand or from CI (both outlive the command; the e2e fixtures reuse them when
KUBECLASSIFY_E2E_K8S_RUN names the plane's run directory):

    eval "$(python tests/support/node.py up)"   # prints export KUBECLASSIFY_E2E_K8S_RUN=...
    python tests/support/node.py down "$KUBECLASSIFY_E2E_K8S_RUN"
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from control_plane import OPERATOR_NAMESPACE, REPO_ROOT, ControlPlane, PlaneError, k8s_dir

RUN_ENV = "KUBECLASSIFY_E2E_K8S_RUN"  # the e2e plane's run directory (set by .ci/run)
NODE_IP = "10.244.0.1"  # the bridge's gateway: pods reach the plane there
NODE_NAME = "kc-node"
NODE_RUN = Path("/tmp/k8s-node")  # node/up.sh's default
OWNER = NODE_RUN / "plane"  # the run directory of the plane the node serves
LOCK = NODE_RUN.with_name("k8s-node.lock")
OPERATOR_OVERLAY = REPO_ROOT / "tests" / "e2e" / "overlay"  # deploy/, the operator's image swapped
OPERATOR_DEPLOYMENT = "kubeclassify-operator"


T = TypeVar("T")


class NodeError(RuntimeError):
    """The node cannot be started, reached or used; the message says what to do."""


def node_dir() -> Path:
    return k8s_dir() / "node"


def check_prerequisites() -> None:
    """Fail, saying what is missing, on a machine that cannot run the node."""
    missing = []
    if not (node_dir() / "up.sh").exists():
        missing.append(f"{node_dir()} (the node's binaries and scripts, from ../shared)")
    if os.geteuid() != 0:
        missing.append("root (containerd, iptables and network namespaces)")
    missing += [
        f"{tool} (apt-get install buildah runc)"
        for tool in ("buildah", "runc")
        if not shutil.which(tool)
    ]
    if missing:
        raise NodeError("the end-to-end tests need: " + "; ".join(missing))


@dataclass(frozen=True)
class Images:
    """What scripts/build-images.sh built: the images' names and their OCI archives."""

    server: str  # the default, OpenVINO-only image
    tensorflow: str  # Dockerfile.server's `tensorflow` target
    operator: str
    archives: tuple[Path, ...]

    def operator_id(self) -> str:
        """The operator image's id, as a pod's status names it (`sha256:...`)."""
        archive = next(a for a in self.archives if a.stem == "operator")
        return "sha256:" + archive.with_name(archive.name + ".id").read_text().strip()


def build_images() -> Images:
    """Run scripts/build-images.sh; it prints `IMAGE ARCHIVE` for each image."""
    done = subprocess.run(
        [str(REPO_ROOT / "scripts" / "build-images.sh")],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        check=False,
        timeout=3600,
    )
    if done.returncode != 0:
        raise NodeError(f"scripts/build-images.sh failed:\n{done.stderr[-3000:]}")
    built = {
        Path(archive).stem: (image, REPO_ROOT / archive)
        for image, archive in (line.split() for line in done.stdout.splitlines())
    }
    return Images(
        server=built["modelserver"][0],
        tensorflow=built["modelserver-tensorflow"][0],
        operator=built["operator"][0],
        archives=tuple(archive for _, archive in built.values()),
    )


@contextlib.contextmanager
def _node_lock() -> Iterator[None]:
    """Two sessions must not claim (or wipe) the machine's one node at the same time."""
    with LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _owner() -> Path | None:
    return Path(OWNER.read_text()) if OWNER.exists() else None


def _serving(run_dir: Path) -> bool:
    """Whether the plane in `run_dir` still answers (its session is alive)."""
    try:
        ready = ControlPlane.described(run_dir).kubectl("get", "--raw", "/readyz", check=False)
    except PlaneError:
        return False
    return ready.stdout.strip() == "ok"


def _refuse_if_busy() -> None:
    """Fail if the node serves another plane that is alive: another session's."""
    owner = _owner()
    if owner is not None and _serving(owner):
        raise NodeError(
            f"the node in {NODE_RUN} serves the live plane in {owner} (another end-to-end "
            f"session): wait for it, or stop it with `python {__file__} down {owner}`"
        )


def _kubelet_running() -> bool:
    pid_file = NODE_RUN / "pids" / "kubelet.pid"
    return pid_file.exists() and Path(f"/proc/{pid_file.read_text().strip()}").exists()


def _run_script(name: str, *args: str, env: dict[str, str], timeout: float = 300) -> None:
    done = subprocess.run(
        [str(node_dir() / name), *args],
        env={**env, "NODE_RUN": str(NODE_RUN), "NODE_IP": NODE_IP},
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise NodeError(f"{node_dir() / name} failed:\n{done.stderr[-3000:]}")


def _wipe() -> None:
    """node/down.sh --wipe: containers, kubelet, kube-proxy and its rules, bridge, state."""
    _run_script("down.sh", "--wipe", env=dict(os.environ))


@dataclass
class Node:
    """The machine's node, joined to `plane`."""

    plane: ControlPlane

    @classmethod
    def start(cls, plane: ControlPlane, outlive: bool = False) -> Node:
        """Join the node to `plane` (node/up.sh). Unless `outlive`, a watcher wipes it when
        this process ends without `down()`, as the plane's own watcher stops the plane."""
        node = cls(plane)
        with _node_lock():
            node._claim()
            if not outlive:
                subprocess.Popen(
                    [sys.executable, __file__, "reap", str(os.getpid()), str(plane.run_dir)],
                    start_new_session=True,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            try:
                _run_script("up.sh", env=plane.env())
            except NodeError:
                _wipe()
                raise
        return node

    @classmethod
    def attach(cls, plane: ControlPlane) -> Node:
        """The node someone else joined to `plane` (e.g. `.ci/run`); left running afterwards."""
        if _owner() != plane.run_dir:
            raise NodeError(f"no node serves the plane in {plane.run_dir} (see {OWNER})")
        jsonpath = '{.status.conditions[?(@.type=="Ready")].status}'
        ready = plane.kubectl("get", "node", NODE_NAME, "-o", f"jsonpath={jsonpath}", check=False)
        if ready.stdout != "True":
            raise NodeError(f"node {NODE_NAME} is not Ready: {ready.stdout}{ready.stderr}")
        return cls(plane)

    def _claim(self) -> None:
        """Make the node this plane's: refuse one that serves another live plane (another
        session's) or was started by hand; wipe what a dead session left."""
        owner = _owner()
        if owner == self.plane.run_dir:
            return
        _refuse_if_busy()
        if owner is None and _kubelet_running():
            raise NodeError(
                f"a node started by hand runs in {NODE_RUN}: stop it first "
                f"({node_dir() / 'down.sh'} --wipe)"
            )
        _wipe()
        NODE_RUN.mkdir(parents=True)
        OWNER.write_text(str(self.plane.run_dir))

    def load(self, images: Images) -> None:
        """Import into the node's containerd the archives it lacks (node/load.sh), so a
        reused node imports a rebuilt image once and an unchanged one never again."""
        loaded = NODE_RUN / "loaded"
        loaded.mkdir(exist_ok=True)
        for archive in images.archives:
            image_id = archive.with_name(archive.name + ".id").read_text()
            record = loaded / f"{archive.name}.id"
            if record.exists() and record.read_text() == image_id:
                continue
            _run_script("load.sh", str(archive), env=self.plane.env(), timeout=1200)
            record.write_text(image_id)

    def down(self) -> None:
        """Wipe the node, if it is still this plane's."""
        with _node_lock():
            if _owner() == self.plane.run_dir:
                _wipe()


@dataclass
class NodeCluster:
    """The e2e plane, its node and the images, and what tests do with them (as the admin)."""

    plane: ControlPlane
    node: Node
    images: Images
    owned: bool = False

    @classmethod
    def start(cls, run_dir: Path | None = None, outlive: bool = False) -> NodeCluster:
        """Build the images, start a fresh plane with NODE_IP, join the node, load them."""
        check_prerequisites()
        _refuse_if_busy()  # before minutes of building: Node.start checks again, locked
        images = build_images()
        plane = ControlPlane.start(run_dir, outlive=outlive, node_ip=NODE_IP)
        try:
            node = Node.start(plane, outlive=outlive)
            node.load(images)
        except BaseException:
            Node(plane).down()
            plane.down()
            raise
        return cls(plane, node, images, owned=True)

    @classmethod
    def attach(cls, run_dir: Path) -> NodeCluster:
        """The plane and node `.ci/run` started; images rebuilt (cached) and loaded if new."""
        check_prerequisites()
        images = build_images()
        plane = ControlPlane.attach(run_dir)
        node = Node.attach(plane)
        node.load(images)
        return cls(plane, node, images)

    def down(self) -> None:
        self.node.down()
        self.plane.down()

    # ---------- using it ----------
    def kubectl(
        self, *args: str, check: bool = True, stdin: str = "", timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """kubectl with the plane's admin kubeconfig; raises PlaneError on failure if `check`."""
        return self.plane.kubectl(*args, check=check, stdin=stdin, timeout=timeout)

    def apply(self, manifest: dict[str, Any], namespace: str | None = None) -> None:
        """`kubectl apply` of one object (in `namespace` when given)."""
        where = ["--namespace", namespace] if namespace else []
        self.kubectl("apply", *where, "--filename", "-", stdin=json.dumps(manifest))

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        done = self.kubectl(
            "get", kind, name, "--namespace", namespace, "--output", "json", check=False
        )
        if done.returncode != 0:
            if "NotFound" in done.stderr:
                return None
            raise PlaneError(f"kubectl get {kind} {name}: {done.stderr}")
        found: dict[str, Any] = json.loads(done.stdout)
        return found

    def install_operator(self) -> None:
        """`kubectl apply -k tests/e2e/overlay` (the README's `kubectl apply -k deploy/`, the
        operator's image and the server images it runs swapped for those built here); returns
        once both operator pods are rolled out and Ready, running the image built here: on a
        reused node the tag is the same and the image new, which nothing else would restart."""
        self.kubectl("apply", "--kustomize", str(OPERATOR_OVERLAY))
        running = {
            status.get("imageID")
            for pod in self.pods(
                OPERATOR_NAMESPACE, f"app.kubernetes.io/name={OPERATOR_DEPLOYMENT}"
            )
            for status in pod.get("status", {}).get("containerStatuses", [])
            if status.get("imageID")  # none yet: a pod being made runs what was just loaded
        }
        if running - {self.images.operator_id()}:
            self.kubectl(
                "rollout", "restart", f"deployment/{OPERATOR_DEPLOYMENT}",
                "--namespace", OPERATOR_NAMESPACE,
            )  # fmt: skip
        self.kubectl(
            "rollout", "status", f"deployment/{OPERATOR_DEPLOYMENT}", "--namespace",
            OPERATOR_NAMESPACE, "--timeout=300s", timeout=330,
        )  # fmt: skip
        self.plane.wait_crds_established()

    @contextlib.contextmanager
    def namespace(self, prefix: str = "e2e") -> Iterator[str]:
        """A fresh namespace, deleted on exit (its pods stop in the background). Its
        classifiers and then its Services go first, and are waited for: a LoadBalancer
        Service given the node IP (`assign_load_balancer`) holds that address's ports until
        it is gone, and the next test's would meet its rules first."""
        name = f"{prefix}-{secrets.token_hex(4)}"
        self.kubectl("create", "namespace", name)
        try:
            yield name
        finally:
            for kind in ("imageclassifiers.kubeclassify.io", "services"):
                self.kubectl(
                    "delete", kind, "--all", "--namespace", name, "--ignore-not-found",
                    "--wait=true", "--timeout=120s", check=False, timeout=150,
                )  # fmt: skip
            self.kubectl("delete", "namespace", name, "--wait=false")

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """The pods matching a label selector."""
        listed = self.kubectl(
            "get", "pods", "--namespace", namespace, "--selector", selector, "--output", "json"
        )
        pods: list[dict[str, Any]] = json.loads(listed.stdout)["items"]
        return pods

    def example(self, name: str) -> dict[str, Any]:
        """examples/<name>.yaml as it is: the operator runs the images built here
        (`install_operator`)."""
        manifest: dict[str, Any] = yaml.safe_load(
            (REPO_ROOT / "examples" / f"{name}.yaml").read_text()
        )
        return manifest

    def classifier(self, name: str, **spec: Any) -> dict[str, Any]:
        """An ImageClassifier on a NodePort Service, requesting little CPU (the node has 2
        cores for every test's pods); `spec` adds to or overrides that. The operator chooses
        its image among those built here."""
        resources = spec.pop("resources", {})
        return {
            "apiVersion": "kubeclassify.io/v1alpha1",
            "kind": "ImageClassifier",
            "metadata": {"name": name},
            "spec": {
                "service": {"type": "NodePort"},
                "resources": {"requests": {"cpu": "100m"}, **resources},
                **spec,
            },
        }

    def wait_condition(
        self,
        name: str,
        namespace: str,
        condition: str = "Ready",
        status: str = "True",
        reason: str | None = None,
        timeout: float = 300,
    ) -> dict[str, Any]:
        """The ImageClassifier once its `condition` has `status` (and `reason`, if given),
        computed from its current spec (observedGeneration). On timeout, fails with the
        conditions it had and its pods' container states."""
        deadline = time.monotonic() + timeout
        while True:
            classifier = self.get("imageclassifier", name, namespace) or {}
            conditions: list[dict[str, Any]] = classifier.get("status", {}).get("conditions", [])
            found: dict[str, Any] = next((c for c in conditions if c["type"] == condition), {})
            generation = classifier.get("metadata", {}).get("generation")
            if (
                found.get("status") == status
                and reason in (None, found.get("reason"))
                and found.get("observedGeneration", generation) == generation
            ):
                return classifier
            if time.monotonic() > deadline:
                states = {
                    pod["metadata"]["name"]: [
                        c.get("state") for c in pod["status"].get("containerStatuses", [])
                    ]
                    for pod in self.pods(namespace, f"app.kubernetes.io/instance={name}")
                }
                raise AssertionError(
                    f"ImageClassifier {namespace}/{name}: no {condition}={status} "
                    f"{reason or ''} after {timeout} s; conditions {conditions}; pods {states}"
                )
            time.sleep(1)

    def node_port(self, service: str, port_name: str, namespace: str) -> int:
        """The nodePort kube-proxy serves the Service's port `port_name` on (127.0.0.1)."""
        found = self.get("service", service, namespace)
        assert found is not None, f"no Service {namespace}/{service}"
        ports = {port["name"]: port.get("nodePort") for port in found["spec"]["ports"]}
        assert ports.get(port_name), f"Service {namespace}/{service} ports: {ports}"
        return int(ports[port_name])

    def url(self, service: str, namespace: str, port_name: str = "http") -> str:
        """http://127.0.0.1:<nodePort>: the Service through kube-proxy, from this machine."""
        return f"http://127.0.0.1:{self.node_port(service, port_name, namespace)}"

    def assign_load_balancer(self, service: str, namespace: str) -> None:
        """Give a LoadBalancer Service the node IP as its address, as a bare-metal provider
        (MetalLB, k3s' ServiceLB) would: kube-proxy then serves its ports there too."""
        ingress = {"status": {"loadBalancer": {"ingress": [{"ip": NODE_IP}]}}}
        self.kubectl(
            "patch", "service", service, "--namespace", namespace, "--subresource=status",
            "--type=merge", "--patch", json.dumps(ingress),
        )  # fmt: skip


def wait_for(what: str, check: Callable[[], T | None], timeout: float) -> T:
    """check()'s first truthy result, polled every 0.5 s; fails naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.5)


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def _reap(owner: int, plane_run: Path) -> None:
    """Wait while the owner lives and the node is this plane's; then wipe it."""
    while _alive(owner) and _owner() == plane_run:
        time.sleep(2)
    with _node_lock():
        if _owner() == plane_run:
            _wipe()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser(
        "up", help="build the images, start a plane and the node; print export lines"
    )
    up.add_argument("run_dir", type=Path, nargs="?")
    down = commands.add_parser("down", help="wipe the node and stop the plane")
    down.add_argument("run_dir", type=Path)
    reap = commands.add_parser("reap", help="wipe the node once process PID has ended")
    reap.add_argument("pid", type=int)
    reap.add_argument("run_dir", type=Path)
    args = parser.parse_args(argv)
    if args.command == "reap":
        _reap(args.pid, args.run_dir)
    elif args.command == "up":
        try:
            cluster = NodeCluster.start(args.run_dir, outlive=True)
        except (NodeError, PlaneError) as error:
            sys.exit(f"e2e cluster: {error}")
        print(f"export {RUN_ENV}={cluster.plane.run_dir}")
    else:
        plane = ControlPlane.described(args.run_dir)
        Node(plane).down()
        plane.down()


if __name__ == "__main__":
    main()
