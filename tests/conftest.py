"""Fixtures shared by every test (where the real test data lives), and the tiers.

Every test gets one or more tier markers from what it uses, so that no test is marked by hand:
- node: tests/e2e, on the real node (root, buildah, a kubelet);
- plane: a real control plane (`plane` or a plane of its own);
- emulator: kmock's API emulator with the operator running against it;
- slow: a real model server, object store, browser or model build, started per session or test;
- unit: none of those (pure functions, in-process fakes, files): `make test-unit`, under a minute.
"""

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
NODE_TESTS = REPO_ROOT / "tests" / "e2e"
PLANE_FIXTURES = frozenset({"plane", "bare_plane"})
EMULATOR_FIXTURES = frozenset({"emulator"})
# Fixtures that start a process or build a model: a test that uses one takes seconds at least.
SLOW_FIXTURES = frozenset(
    {
        "mobilenet_server",
        "resnet_server",
        "page_server",
        "runtime_server",
        "two_workers",
        "held_mobilenet_server",
        "held_server",
        "small_queue_server",
        "any_server",
        "resnet50_ir_server",
        "resnet_weights",
        "resnet_int8_ir",
        "s3",
        "trained",
        "without_runtimes",
        "openvino_only",
    }
)

# Modules whose tests start their own model server (no fixture to tell by).
SLOW_MODULES = frozenset(
    REPO_ROOT / "tests" / "modelserver" / name
    for name in ("test_drain.py", "test_worker_deaths.py", "test_serving.py", "test_model_files.py")
)


def tiers(item: pytest.Item) -> list[str]:
    """The tier markers of a test, from where it lives and the fixtures it uses."""
    used = set(getattr(item, "fixturenames", ()))
    found = [
        tier
        for tier, applies in (
            ("node", item.path.is_relative_to(NODE_TESTS)),
            ("plane", bool(used & PLANE_FIXTURES)),
            ("emulator", bool(used & EMULATOR_FIXTURES)),
            ("slow", bool(used & SLOW_FIXTURES) or item.path in SLOW_MODULES),
        )
        if applies
    ]
    return found or ["unit"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for tier in tiers(item):
            item.add_marker(tier)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """`../shared` beside the project root (CI has it too); KUBECLASSIFY_SHARED overrides."""
    shared = Path(os.environ.get("KUBECLASSIFY_SHARED", REPO_ROOT.parent / "shared"))
    assert (shared / "models").is_dir(), f"test data not found at {shared}"
    return shared
