"""`pip install ./modelserver` without the `[cpu]` or `[gpu]` extra has neither TensorFlow nor
OpenVINO: the server says in one line what to install, started either way, never with a
ModuleNotFoundError traceback. The runtimes are hidden from a real process (a sitecustomize
that marks them missing), which then runs exactly as such an install would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from serving import free_port

WHAT_TO_INSTALL = "install 'kubeclassify-modelserver[cpu]'"


@pytest.fixture
def without_runtimes(tmp_path: Path) -> dict[str, str]:
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(
        "import sys\nsys.modules['tensorflow'] = sys.modules['openvino'] = None\n"
    )
    port, grpc_port = str(free_port()), str(free_port())
    return {**os.environ, "PYTHONPATH": str(hide), "HOST": "127.0.0.1", "PORT": port,
            "GRPC_PORT": grpc_port}  # fmt: skip


def test_modelserver_serve_says_what_to_install(
    without_runtimes: dict[str, str], tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "modelserver", "serve"],
        env=without_runtimes, capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and WHAT_TO_INSTALL in result.stderr, result.stderr


def test_gunicorn_run_directly_says_it_too_and_stops(
    without_runtimes: dict[str, str], tmp_path: Path
) -> None:
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    result = subprocess.run(
        [gunicorn, "-c", "python:modelserver.gunicorn_conf"],
        env=without_runtimes, capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode != 0
    assert (
        f"cannot serve: no backend installed can serve the built-in ResNet50: {WHAT_TO_INSTALL}"
        in result.stderr
    )
    assert "Traceback" not in result.stderr and "ModuleNotFoundError" not in result.stderr
