"""The server's settings, read from environment variables or CLI flags.

Every option is an environment variable (what containers and the operator set) and a
`modelserver serve` flag (what people type). Each is defined once, as a `Settings` field whose
metadata names its variable, flag and bounds (`_option`); `OPTIONS`, the flags and the checks
are read from those fields, so they cannot drift apart. This module imports nothing heavy:
gunicorn's master reads it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .models.formats import BACKENDS, MODEL_SUFFIXES, PRECISIONS

DEFAULT_PORT = 5000
DEFAULT_GRPC_PORT = 8081
BUILTIN_MODELS = ("resnet50",)
LOG_LEVELS = ("debug", "info", "warning", "error")


def _option(
    env: str,
    help: str,
    *,
    short_flag: str | None = None,
    minimum: int = 1,
    choices: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A `Settings` field's metadata that makes it an option, the one place it is defined: the
    variable, the help, the flag when not the variable's name, the least value of a number,
    the values a word may take."""
    return {
        "env": env,
        "help": help,
        "short_flag": short_flag,
        "minimum": minimum,
        "choices": choices,
    }


@dataclass(frozen=True)
class Settings:
    """Validated server settings, one field per option."""

    model_name: str = field(
        default="resnet50",
        metadata=_option(
            "MODEL_NAME",
            "built-in model to serve (resnet50)",
            short_flag="model",
            choices=BUILTIN_MODELS,
        ),
    )
    weights: str = field(
        default="imagenet",
        metadata=_option(
            "MODEL_WEIGHTS",
            "'imagenet' (official Keras download, cached) or a path to a weights file",
            short_flag="weights",
        ),
    )
    model_file: Path | None = field(
        default=None,
        metadata=_option(
            "MODEL_FILE",
            f"serve this {', '.join(MODEL_SUFFIXES)} classifier instead (an IR's .bin beside it)",
        ),
    )
    labels_file: Path | None = field(
        default=None,
        metadata=_option(
            "MODEL_LABELS",
            "labels for MODEL_FILE: .txt (one a line) or .json",
            short_flag="labels",
        ),
    )
    backend: str = field(
        default="auto",
        metadata=_option(
            "MODEL_BACKEND",
            "auto, tensorflow or openvino (auto: OpenVINO where installed, else TensorFlow)",
            short_flag="backend",
            choices=("auto", *BACKENDS),
        ),
    )
    precision: str = field(
        default="auto",
        metadata=_option(
            "MODEL_PRECISION",
            "auto, fp32, bf16 or int8 (auto: int8 for a quantized model, bf16 on OpenVINO with "
            "a native-BF16 CPU, else fp32)",
            short_flag="precision",
            choices=("auto", *PRECISIONS),
        ),
    )
    cache_dir: Path | None = field(
        default=None,
        metadata=_option(
            "CACHE_DIR",
            "where OpenVINO keeps converted and compiled models, so restarts skip both",
        ),
    )
    host: str = field(default="0.0.0.0", metadata=_option("HOST", "address to bind"))
    port: int = field(default=DEFAULT_PORT, metadata=_option("PORT", "port to bind"))
    grpc_port: int = field(
        default=DEFAULT_GRPC_PORT,
        metadata=_option(
            "GRPC_PORT",
            "port for gRPC (Open Inference Protocol); 0: no gRPC",
            minimum=0,
        ),
    )
    workers: int = field(
        default=1, metadata=_option("WORKERS", "gunicorn worker processes (each loads the model)")
    )
    threads: int = field(default=32, metadata=_option("THREADS", "request threads per worker"))
    max_queue: int | None = field(
        default=None,
        metadata=_option(
            "MAX_QUEUE",
            "requests a worker works on before answering 503 (default 3/4 of THREADS; 0: no bound)",
            minimum=0,
        ),
    )
    batch_max_size: int = field(
        default=16, metadata=_option("BATCH_MAX_SIZE", "most images in one forward pass")
    )
    batch_max_delay_ms: float = field(
        default=2.0,
        metadata=_option(
            "BATCH_MAX_DELAY_MS", "longest wait for a batch to fill, in ms", minimum=0
        ),
    )
    top_k: int = field(
        default=5, metadata=_option("TOP_K", "predictions returned when a request does not say")
    )
    max_upload_bytes: int = field(
        default=10 * 1024 * 1024,
        metadata=_option("MAX_UPLOAD_BYTES", "largest request body, in bytes (else 413)"),
    )
    max_image_pixels: int = field(
        default=40_000_000,
        metadata=_option("MAX_IMAGE_PIXELS", "largest image, in pixels (else 400)"),
    )
    graceful_timeout: int = field(
        default=30,
        metadata=_option("GRACEFUL_TIMEOUT", "seconds to finish in-flight requests", minimum=0),
    )
    log_level: str = field(
        default="info",
        metadata=_option("LOG_LEVEL", "debug, info, warning or error", choices=LOG_LEVELS),
    )
    page: bool = field(
        default=True,
        metadata=_option(
            "PAGE",
            "serve the page to try the model in a browser, with live figures, at / (and /stats)",
        ),
    )

    def __post_init__(self) -> None:
        """Refuse nonsense at start-up, naming the variable, rather than fail on a request."""
        for option in OPTIONS:
            option.check(getattr(self, option.field))
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
    """One `Settings` field as an option: its `_option` metadata, and how to read its text
    (from the field's type)."""

    field: str
    kind: Callable[[str], Any]
    env: str
    help: str
    short_flag: str | None
    minimum: int
    choices: tuple[str, ...]

    @property
    def flag(self) -> str:
        """`--short-flag` where one is given, else the variable's name in flag form."""
        return "--" + (self.short_flag or self.env.lower().replace("_", "-"))

    def parse(self, raw: str) -> Any:
        try:
            return self.kind(raw)
        except ValueError as error:
            raise ValueError(f"{self.env}={raw!r}: {error}") from None

    def check(self, value: object) -> None:
        """Refuse a number below the minimum, or a word not among the choices."""
        if isinstance(value, int | float) and not isinstance(value, bool) and value < self.minimum:
            raise ValueError(f"{self.env} must be at least {self.minimum}, got {value}")
        if self.choices and value not in self.choices:
            raise ValueError(f"{self.env} must be one of {self.choices}, got {value!r}")


def _reader(hint: Any) -> Callable[[str], Any]:
    """How to read a field of type `hint` from text: its type without None, booleans as
    `parse_bool` reads them."""
    kind = next((arg for arg in typing.get_args(hint) if arg is not type(None)), hint)
    return parse_bool if kind is bool else kind


_HINTS = typing.get_type_hints(Settings)
OPTIONS: tuple[Option, ...] = tuple(
    Option(setting.name, _reader(_HINTS[setting.name]), **setting.metadata)
    for setting in dataclasses.fields(Settings)
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
