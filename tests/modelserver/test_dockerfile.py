"""What can be checked of Dockerfile.server without a Docker engine."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

from modelserver.config import DEFAULT_GRPC_PORT, DEFAULT_PORT


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    pairs = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def test_the_files_it_copies_exist(repo_root: Path) -> None:
    copies = [args for key, args in instructions(repo_root / "Dockerfile.server") if key == "COPY"]
    sources = [shlex.split(args)[:-1] for args in copies if not args.startswith("--from")]
    assert sources
    for source in (path for group in sources for path in group):
        assert (repo_root / source).exists(), source


def test_the_entry_point_is_the_installed_console_command(repo_root: Path) -> None:
    steps = dict(instructions(repo_root / "Dockerfile.server"))
    command = shlex.split(steps["ENTRYPOINT"].strip("[]").replace(",", " "))
    scripts = tomllib.loads((repo_root / "modelserver/pyproject.toml").read_text())["project"][
        "scripts"
    ]
    assert command == ["modelserver", "serve"] and "modelserver" in scripts
    assert steps["EXPOSE"] == f"{DEFAULT_PORT} {DEFAULT_GRPC_PORT}"
    assert steps["USER"] not in ("root", "0")


def model_weights(steps: list[tuple[str, str]]) -> str:
    """MODEL_WEIGHTS, which the build stage and the images must set alike."""
    values = {
        word.split("=", 1)[1]
        for key, args in steps
        if key == "ENV"
        for word in args.split()
        if word.startswith("MODEL_WEIGHTS=")
    }
    assert len(values) == 1, values
    return values.pop()


def test_the_baked_weights_are_the_ones_the_server_reads(
    repo_root: Path, resnet_weights: Path, tmp_path: Path
) -> None:
    steps = instructions(repo_root / "Dockerfile.server")
    baked = model_weights(steps)
    fetch = next(args for key, args in steps if key == "RUN" and "fetch-weights" in args)
    words = shlex.split(fetch)
    assert words[words.index("--output") + 1] == "$MODEL_WEIGHTS"
    # ... and converted where the server looks first (`registry.baked_ir`), into the folder
    # both images copy beside MODEL_WEIGHTS.
    assert words[words.index("convert") :][:3] == ["convert", "--weights", "$MODEL_WEIGHTS"]
    copies = [shlex.split(args) for key, args in steps if key == "COPY" and "/opt/ir" in args]
    assert {tuple(copy) for copy in copies} == {("--from=build", "/opt/ir", "/opt/weights")}
    assert str(Path(baked).parent) == "/opt/weights" and len(copies) == 2  # both images

    # The build step itself, with a local file as an air-gapped build passes it, into a
    # folder that does not exist yet (nothing in the image creates /opt/weights before it).
    output = tmp_path / "opt" / "weights" / Path(baked).name
    subprocess.run(
        [sys.executable, "-m", "modelserver", "fetch-weights", "--source", str(resnet_weights),
         "--output", str(output)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    assert output.read_bytes() == resnet_weights.read_bytes()


def test_the_int8_build_step_quantizes_the_weights_the_server_reads(repo_root: Path) -> None:
    """`--build-arg INT8=yes` writes the IR where MODEL_PRECISION=int8 looks for it, from
    folders the build context copies."""
    steps = instructions(repo_root / "Dockerfile.server")
    run = next(args for key, args in steps if key == "RUN" and "modelserver quantize" in args)
    words = shlex.split(run.replace(";", " ; "))
    assert words[words.index("--weights") + 1] == "$MODEL_WEIGHTS"
    assert "--output" not in words  # so the IR lands beside the weights: int8_ir_beside
    copied = next(
        shlex.split(args) for key, args in steps if key == "COPY" and "quantization" in args
    )
    for flag in ("--calibration", "--held-out"):
        folder = Path(words[words.index(flag) + 1])
        assert folder.parent == Path(copied[-1]), flag
        assert (repo_root / copied[0] / folder.name).is_dir(), flag
    assert any(key == "ARG" and args == "INT8=no" for key, args in steps)
