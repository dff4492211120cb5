"""Choosing the backend and precision: what `auto` picks, and every impossible combination
refused before gunicorn starts, in one line that names the settings."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from modelserver.cli import main as cli_main
from modelserver.config import Settings
from modelserver.models import cpu, registry
from modelserver.models.base import ModelLoadError

BF16_CPU = frozenset({"avx2", "avx512f", "avx512_bf16"})
PLAIN_CPU = frozenset({"avx2"})


def with_flags(monkeypatch: pytest.MonkeyPatch, flags: frozenset[str]) -> None:
    monkeypatch.setattr(cpu, "cpu_flags", lambda: flags)


@pytest.mark.parametrize(
    ("flags", "backend", "quantized", "chosen"),
    [
        (BF16_CPU, "openvino", False, "bf16"),
        (PLAIN_CPU, "openvino", False, "fp32"),
        (BF16_CPU, "tensorflow", False, "fp32"),
        (PLAIN_CPU, "openvino", True, "int8"),
        (BF16_CPU, "tensorflow", True, "int8"),
    ],
)
def test_auto_precision(
    monkeypatch: pytest.MonkeyPatch,
    flags: frozenset[str],
    backend: str,
    quantized: bool,
    chosen: str,
) -> None:
    with_flags(monkeypatch, flags)
    assert registry.choose_precision("auto", backend, quantized) == chosen


def test_auto_backend_is_openvino_where_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    assert registry.choose_backend(Settings()) == "openvino"
    monkeypatch.setattr(registry, "installed", lambda package: package != "openvino")
    assert registry.choose_backend(Settings()) == "tensorflow"


def serve_error(capsys: pytest.CaptureFixture[str], *flags: str) -> str:
    """What `modelserver serve` says when it refuses to start; it must say it in one line."""
    assert cli_main(["serve", *flags]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1, error
    return error


@pytest.fixture(scope="module")
def float_model_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty weights file and an IR without FakeQuantize: the checks read no further."""
    directory = tmp_path_factory.mktemp("float")
    (directory / "weights.h5").write_bytes(b"")
    (directory / "float.xml").write_text('<net><layers><layer type="Convolution"/></layers></net>')
    (directory / "float.bin").write_bytes(b"")
    return directory


def test_int8_with_a_float_model_is_refused(
    capsys: pytest.CaptureFixture[str], float_model_files: Path
) -> None:
    weights = str(float_model_files / "weights.h5")
    for flags in (
        ("--weights", weights, "--precision", "int8"),
        ("--weights", weights, "--precision", "int8", "--backend", "tensorflow"),
        ("--model-file", str(float_model_files / "float.xml"), "--precision", "int8"),
    ):
        error = serve_error(capsys, *flags)
        assert "MODEL_PRECISION=int8 needs a quantized model" in error, flags


def test_openvino_where_it_is_not_installed_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(registry, "installed", lambda package: package != "openvino")
    error = serve_error(capsys, "--backend", "openvino")
    assert "MODEL_BACKEND=openvino but openvino is not installed" in error


def test_bf16_on_a_cpu_without_it_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with_flags(monkeypatch, PLAIN_CPU)
    error = serve_error(capsys, "--precision", "bf16")
    assert "MODEL_PRECISION=bf16 but this CPU has no native BF16" in error


def test_bf16_on_tensorflow_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with_flags(monkeypatch, BF16_CPU)
    error = serve_error(capsys, "--precision", "bf16", "--backend", "tensorflow")
    assert "MODEL_PRECISION=bf16 needs MODEL_BACKEND=openvino" in error


def test_an_ir_on_tensorflow_is_refused(
    capsys: pytest.CaptureFixture[str], float_model_files: Path
) -> None:
    ir = str(float_model_files / "float.xml")
    error = serve_error(capsys, "--model-file", ir, "--backend", "tensorflow")
    assert "MODEL_BACKEND=tensorflow cannot serve an OpenVINO IR" in error


def test_an_ir_without_its_bin_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "lonely.xml").write_text("<net/>")
    error = serve_error(capsys, "--model-file", str(tmp_path / "lonely.xml"))
    assert "no such file (lonely.bin beside it)" in error


def test_bad_choices_are_refused_by_the_settings() -> None:
    for environ, words in (
        ({"MODEL_BACKEND": "onnx"}, "MODEL_BACKEND must be one of"),
        ({"MODEL_PRECISION": "fp16"}, "MODEL_PRECISION must be one of"),
    ):
        with pytest.raises(ValueError, match=words):
            Settings.from_env(environ)


def test_the_real_command_exits_with_one_line(float_model_files: Path) -> None:
    """The same refusal from the installed command, as a container would run it."""
    result = subprocess.run(
        [sys.executable, "-m", "modelserver", "serve", "--precision", "int8",
         "--weights", str(float_model_files / "weights.h5")],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith(
        "modelserver: cannot serve: MODEL_PRECISION=int8 needs a quantized model"
    )
    assert result.stderr.count("\n") == 1, result.stderr


def test_the_cgroup_quota_sizes_the_threads(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cpu.cgroup_quota(tmp_path) == 2
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpu.cgroup_quota(tmp_path) is None
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu.cgroup_quota(tmp_path) == 1


def test_a_model_load_error_is_what_the_registry_raises() -> None:
    with pytest.raises(ModelLoadError, match=r"expected a \.keras, \.tflite, \.xml file"):
        registry.choose_backend(Settings(model_file=Path("model.onnx")))


@pytest.mark.parametrize(
    ("flags", "requested", "hint"),
    [
        (BF16_CPU, "auto", "f32"),  # auto on a quantized model is int8: FP32 float parts
        (BF16_CPU, "int8", "f32"),
        (BF16_CPU, "fp32", "f32"),
        (BF16_CPU, "bf16", "bf16"),
        (PLAIN_CPU, "auto", "f32"),
    ],
)
def test_a_quantized_models_float_parts_run_in_fp32_unless_bf16_is_asked_for(
    monkeypatch: pytest.MonkeyPatch, flags: frozenset[str], requested: str, hint: str
) -> None:
    """OpenVINO's own default on a BF16 CPU is bf16: the hint is always passed, whatever the
    CPU this test runs on says (its flags are set here)."""
    from modelserver.models.openvino import compile_options

    with_flags(monkeypatch, flags)
    chosen = registry.choose_precision(requested, "openvino", quantized=True)
    assert compile_options(chosen, 2) == {
        "INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 2
    }  # fmt: skip


def test_what_runs_is_read_back_from_the_compiled_model(mobilenet_file: Path) -> None:
    """Compiled without a hint, OpenVINO picks by the CPU (bf16 where it is native): the
    runtime reported is what it picked, not what was (not) asked."""
    import openvino as ov  # type: ignore[import-untyped]
    from modelserver.models.openvino import compile_options, compiled_runtime

    core = ov.Core()
    default = core.compile_model(str(mobilenet_file), "CPU", {"INFERENCE_NUM_THREADS": 1})
    runtime = compiled_runtime(default, quantized=True)
    assert runtime.float_precision == ("bf16" if cpu.native_bf16() else "fp32")
    assert (runtime.precision, runtime.threads) == ("int8", 1)
    asked = core.compile_model(str(mobilenet_file), "CPU", compile_options("int8", 1))
    assert compiled_runtime(asked, quantized=True).describe() == {
        "backend": "openvino", "device": "CPU", "threads": 1, "float_precision": "fp32",
        "quantized": True, "precision": "int8",
    }  # fmt: skip


def test_the_served_model_says_what_runs(
    mobilenet_file: Path, mobilenet_labels: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The default settings on the quantized MobileNetV2, on any CPU: INT8 with FP32 float
    parts, in /v1/models, in modelserver_model_info and in the start-up log."""
    from serving import ready_app

    caplog.set_level(logging.INFO, logger="modelserver.service")
    app = ready_app(Settings(model_file=mobilenet_file, labels_file=mobilenet_labels))
    client = app.test_client()
    status = client.get(f"/v1/models/{mobilenet_file.stem}").get_json()
    assert (status["backend"], status["precision"], status["float_precision"]) == (
        "openvino", "int8", "fp32"
    )  # fmt: skip
    assert status["quantized"] is True
    metrics = client.get("/metrics").get_data(as_text=True)
    assert (
        f'modelserver_model_info{{backend="openvino",device="CPU",float_precision="fp32",'
        f'model="{mobilenet_file.stem}",precision="int8"}} 1.0'
    ) in metrics
    [ready] = [r.getMessage() for r in caplog.records if " ready in " in r.getMessage()]
    assert "float_precision=fp32" in ready and "precision=int8" in ready
