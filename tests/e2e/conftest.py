"""Fixtures for the end-to-end tests: the images this repository builds, run as real pods by a
real kubelet on a real node (`../shared/k8s/node/`), reached through real Services.

The slow parts run once per session: the images (scripts/build-images.sh, cached), a fresh
plane with NODE_IP and the node, the images' import (tests/support/node.py), or the ones
`.ci/run` started (KUBECLASSIFY_E2E_K8S_RUN); and the operator, installed as users install it.
A machine that lacks ../shared, root or buildah fails these tests, saying so: never a skip.
Traffic goes only to 127.0.0.1 node ports, pod IPs on 10.244.0.0/24 and the node IP.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from node import RUN_ENV, NodeCluster

HERE = Path(__file__).parent
# The first test sets the session up: a cold image build and the images' import take minutes
# on 2 cores, beyond pytest's usual timeout.
SETUP_TIMEOUT = 1800


@pytest.hookimpl(trylast=True)  # the order the tests will run in
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The first e2e test gets time for the session's setup (its own timeout mark wins)."""
    first = next((item for item in items if item.path.is_relative_to(HERE)), None)
    if first is not None:
        first.add_marker(pytest.mark.timeout(SETUP_TIMEOUT))


@pytest.fixture(scope="session")
def node_cluster() -> Iterator[NodeCluster]:
    """The plane with the node joined and the images loaded: `.ci/run`'s, else one of this
    session's own, wiped and stopped after it."""
    reuse = os.environ.get(RUN_ENV)
    cluster = NodeCluster.attach(Path(reuse)) if reuse else NodeCluster.start()
    try:
        yield cluster
    finally:
        if cluster.owned:
            cluster.down()


@pytest.fixture(scope="session")
def operator_installed(node_cluster: NodeCluster) -> None:
    """`kubectl apply -k tests/e2e/overlay` (the README's `kubectl apply -k deploy/`, the image
    swapped); returns once both operator pods are rolled out and Ready."""
    node_cluster.install_operator()


@pytest.fixture
def e2e_namespace(node_cluster: NodeCluster) -> Iterator[str]:
    """A fresh namespace for one test; deleted after it (its pods stop in the background)."""
    with node_cluster.namespace() as name:
        yield name


@pytest.fixture(scope="session")
def http() -> Iterator[requests.Session]:
    """requests that ignore proxy settings: traffic goes straight to the addresses tests name."""
    with requests.Session() as session:
        session.trust_env = False
        yield session
