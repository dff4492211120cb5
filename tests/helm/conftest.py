"""Fixtures for the chart's tests on the real control plane (`../shared/k8s`, no kubelet).

The operator is run as the operator tests run it: tests/operator/conftest.py's
`OperatorProcess` (the installed console command, stopped with the session) and its `Cluster`
and `Namespace` clients. pytest keeps a directory's conftest to that directory, so that file is
loaded here as a module, not copied.
"""

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from control_plane import RUN_ENV, ControlPlane

OPERATOR_CONFTEST = Path(__file__).resolve().parents[1] / "operator" / "conftest.py"


@pytest.fixture(scope="session")
def operators() -> ModuleType:
    """tests/operator/conftest.py, as a module: `OperatorProcess`, `Cluster`, `Namespace`."""
    spec = importlib.util.spec_from_file_location("operator_test_helpers", OPERATOR_CONFTEST)
    assert spec is not None and spec.loader is not None, OPERATOR_CONFTEST
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
def admin(plane: ControlPlane, operators: ModuleType) -> Any:
    """The admin's client for the real API server (`Cluster`: cluster-admin, not subject to
    the chart's RBAC)."""
    return operators.Cluster(plane.url, cert=plane.admin_cert, ca=str(plane.ca_cert))
