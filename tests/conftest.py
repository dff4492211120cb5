"""Fixtures shared by every test: where the real test data lives."""

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """`../shared` beside the project root (CI has it too); KUBECLASSIFY_SHARED overrides."""
    shared = Path(os.environ.get("KUBECLASSIFY_SHARED", REPO_ROOT.parent / "shared"))
    assert (shared / "models").is_dir(), f"test data not found at {shared}"
    return shared
