"""The server's settings: one table of options, read from environment variables or CLI flags.

Every option is an environment variable (what containers and the operator set) and a
`modelserver serve` flag (what people type). Both are derived from `OPTIONS`, so they
cannot drift apart. This module imports nothing heavy: gunicorn's master reads it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .models.formats import BACKENDS, MODEL_SUFFIXES, PRECISIONS

DEFAULT_PORT = 5000
DEFAULT_GRPC_PORT = 8081
BUILTIN_MODELS = ("resnet50",)
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class Settings:
    """Validated server settings; field names match `Option.field`."""

    model_name: str = "resnet50"
    weights: str = "imagenet"
    model_file: Path | None = None
    labels_file: Path | None = None
    backend: str = "auto"
    precision: str = "auto"
    cache_dir: Path | None = None
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    grpc_port: int = DEFAULT_GRPC_PORT
    workers: int = 1
    threads: int = 32
    max_queue: int | None = None
    batch_max_size: int = 16
    batch_max_delay_ms: float = 2.0
    top_k: int = 5
    max_upload_bytes: int = 10 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    graceful_timeout: int = 30
    log_level: str = "info"
    page: bool = True

    def __post_init__(self) -> None:
        """Refuse nonsense at start-up, naming the variable, rather than fail on a request."""
        minimums = {"batch_max_delay_ms": 0, "graceful_timeout": 0, "max_queue": 0, "grpc_port": 0}
        for option in OPTIONS:
            value, minimum = getattr(self, option.field), minimums.get(option.field, 1)
            if isinstance(value, int | float) and not isinstance(value, bool) and value < minimum:
                raise ValueError(f"{option.env} must be at least {minimum}, got {value}")
        if self.model_name not in BUILTIN_MODELS:
            raise ValueError(f"MODEL_NAME must be one of {BUILTIN_MODELS}, got {self.model_name!r}")
        for field, env, choices in (
            ("backend", "MODEL_BACKEND", ("auto", *BACKENDS)),
            ("precision", "MODEL_PRECISION", ("auto", *PRECISIONS)),
        ):
            if getattr(self, field) not in choices:
                raise ValueError(f"{env} must be one of {choices}, got {getattr(self, field)!r}")
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"LOG_LEVEL must be one of {LOG_LEVELS}, got {self.log_level!r}")
        if self.labels_file is not None and self.model_file is None:
            raise ValueError("MODEL_LABELS only applies with MODEL_FILE")
        if self.max_queue and self.max_queue >= self.threads:
            raise ValueError(
                f"MAX_QUEUE ({self.max_queue}) must be below THREADS ({self.threads}): refusing "
                "a request over the bound, and answering probes, needs a free thread"
            )

    @property
    def queue_limit(self) -> int | None:
        """Requests one worker holds at once before it sheds load; None for no bound.

        By default 3/4 of the threads, so the rest stay free to refuse quickly and to answer
        probes while the model is saturated."""
        if self.max_queue is None:
            return max(1, self.threads * 3 // 4)
        return self.max_queue or None

    @property
    def served_name(self) -> str:
        """The name in `/v1/models/<name>`: the model file's stem, or the built-in model's name."""
        return self.model_file.stem if self.model_file else self.model_name

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        values = {o.field: o.parse(environ[o.env]) for o in OPTIONS if environ.get(o.env)}
        return cls(**values)


def parse_bool(raw: str) -> bool:
    """true or false, also as YAML and people write them (yes/no, on/off, 1/0)."""
    lowered = raw.strip().lower()
    if lowered in ("true", "yes", "on", "1"):
        return True
    if lowered in ("false", "no", "off", "0"):
        return False
    raise ValueError("expected true or false")


@dataclass(frozen=True)
class Option:
    field: str
    env: str
    help: str
    kind: Callable[[str], Any] = str
    short_flag: str | None = None

    @property
    def flag(self) -> str:
        """`--short-flag` where one is given, else the variable's name in flag form."""
        return "--" + (self.short_flag or self.env.lower().replace("_", "-"))

    def parse(self, raw: str) -> Any:
        try:
            return self.kind(raw)
        except ValueError as error:
            raise ValueError(f"{self.env}={raw!r}: {error}") from None


OPTIONS: tuple[Option, ...] = (
    Option("model_name", "MODEL_NAME", "built-in model to serve (resnet50)", str, "model"),
    Option(
        "weights",
        "MODEL_WEIGHTS",
        "'imagenet' (official Keras download, cached) or a path to a weights file",
        str,
        "weights",
    ),
    Option(
        "model_file",
        "MODEL_FILE",
        f"serve this {', '.join(MODEL_SUFFIXES)} classifier instead (an IR's .bin beside it)",
        Path,
    ),
    Option(
        "labels_file",
        "MODEL_LABELS",
        "labels for MODEL_FILE: .txt (one a line) or .json",
        Path,
        "labels",
    ),
    Option(
        "backend",
        "MODEL_BACKEND",
        "auto, tensorflow or openvino (auto: OpenVINO where installed, else TensorFlow)",
        str,
        "backend",
    ),
    Option(
        "precision",
        "MODEL_PRECISION",
        "auto, fp32, bf16 or int8 (auto: int8 for a quantized model, bf16 on OpenVINO with "
        "a native-BF16 CPU, else fp32)",
        str,
        "precision",
    ),
    Option(
        "cache_dir",
        "CACHE_DIR",
        "where OpenVINO keeps converted and compiled models, so restarts skip both",
        Path,
    ),
    Option("host", "HOST", "address to bind"),
    Option("port", "PORT", "port to bind", int),
    Option("grpc_port", "GRPC_PORT", "port for gRPC (Open Inference Protocol); 0: no gRPC", int),
    Option("workers", "WORKERS", "gunicorn worker processes (each loads the model)", int),
    Option("threads", "THREADS", "request threads per worker", int),
    Option(
        "max_queue",
        "MAX_QUEUE",
        "requests a worker works on before answering 503 (default 3/4 of THREADS; 0: no bound)",
        int,
    ),
    Option("batch_max_size", "BATCH_MAX_SIZE", "most images in one forward pass", int),
    Option(
        "batch_max_delay_ms", "BATCH_MAX_DELAY_MS", "longest wait for a batch to fill, in ms", float
    ),
    Option("top_k", "TOP_K", "predictions returned when a request does not say", int),
    Option(
        "max_upload_bytes", "MAX_UPLOAD_BYTES", "largest request body, in bytes (else 413)", int
    ),
    Option("max_image_pixels", "MAX_IMAGE_PIXELS", "largest image, in pixels (else 400)", int),
    Option("graceful_timeout", "GRACEFUL_TIMEOUT", "seconds to finish in-flight requests", int),
    Option("log_level", "LOG_LEVEL", "debug, info, warning or error"),
    Option(
        "page",
        "PAGE",
        "serve the page to try the model in a browser, with live figures, at / (and /stats)",
        parse_bool,
    ),
)


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Add one flag per option; an unset flag leaves the environment (or default) in charge.
    A true-or-false option is a pair of flags, `--page` and `--no-page`."""
    for option in OPTIONS:
        how: dict[str, Any] = (
            {"action": argparse.BooleanOptionalAction}
            if option.kind is parse_bool
            else {"metavar": option.env}
        )
        parser.add_argument(option.flag, dest=option.field, default=None, help=option.help, **how)


def flags_to_env(namespace: argparse.Namespace) -> dict[str, str]:
    """The environment variables that the given flags stand for, checked by parsing them."""
    chosen = {o: getattr(namespace, o.field) for o in OPTIONS}
    env = {o.env: str(value) for o, value in chosen.items() if value is not None}
    Settings.from_env({**os.environ, **env})
    return env
