"""Fixtures for the chart's tests on the real control plane (`../shared/k8s`, no kubelet).

The operator is run as the operator tests run it, with their `OperatorProcess` and their `Cluster`
and `Namespace` clients (tests/support/operators.py).
"""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from control_plane import RUN_ENV, ControlPlane
from operators import Cluster


@pytest.fixture(scope="module")
def plane() -> Iterator[ControlPlane]:
    """The plane `.ci/run` started (KUBECLASSIFY_K8S_RUN), else one of this module's own,
    stopped after it. Nothing is installed: the tests install the chart."""
    reuse = os.environ.get(RUN_ENV)
    control_plane = ControlPlane.attach(Path(reuse)) if reuse else ControlPlane.start()
    try:
        yield control_plane
    finally:
        if control_plane.owned:
            control_plane.down()


@pytest.fixture(scope="module")
def admin(plane: ControlPlane) -> Cluster:
    """The admin's client for the real API server (cluster-admin, not subject to the chart's
    RBAC)."""
    return Cluster(plane.url, cert=plane.admin_cert, ca=str(plane.ca_cert))
