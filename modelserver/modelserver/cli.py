"""`modelserver serve | predict | fetch | fetch-weights`: the command line."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from .client import PredictError, predict_files
from .config import DEFAULT_PORT, Settings, add_flags, flags_to_env
from .fetch import command as fetch_command
from .models.base import ModelLoadError
from .models.registry import check_settings
from .weights import WeightsUnavailable, resolve_weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="modelserver", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve predictions over HTTP (gunicorn)")
    add_flags(serve)

    predict = commands.add_parser("predict", help="classify images with a running server")
    predict.add_argument("images", nargs="+", type=Path)
    predict.add_argument("--url", default=f"http://localhost:{DEFAULT_PORT}/predict")
    predict.add_argument("--top-k", type=int, default=None)
    predict.add_argument("--json", action="store_true", help="print the server's JSON")

    fetch_command.add_parser(commands)

    fetch = commands.add_parser("fetch-weights", help="put ResNet50 weights at a path")
    fetch.add_argument("--output", type=Path, required=True)
    fetch.add_argument(
        "--source", default="imagenet", help="'imagenet' (official download) or a local file"
    )

    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "predict":
            return _predict(args.images, args.url, args.top_k, args.json)
        if args.command == "fetch":
            return fetch_command.run(args)
        shutil.copyfile(resolve_weights(args.source), args.output)
        print(f"weights written to {args.output}")
        return 0
    except (WeightsUnavailable, ModelLoadError, PredictError, ValueError, OSError) as error:
        print(f"modelserver: {error}", file=sys.stderr)
        return 2


def _serve(args: argparse.Namespace) -> int:
    """Settle the backend, precision and weights here (failing fast, in one line, on an
    impossible combination or offline), then become gunicorn."""
    env = {**os.environ, **flags_to_env(args)}
    settings = Settings.from_env(env)
    check_settings(settings)
    if settings.model_file is None:
        env["MODEL_WEIGHTS"] = str(resolve_weights(settings.weights))
    # gunicorn's own script, not `python -m`, which would put the working directory first on
    # sys.path, where a source checkout's `modelserver/` folder would shadow the package.
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    os.execve(gunicorn, [gunicorn, "-c", "python:modelserver.gunicorn_conf"], env)


def _predict(images: list[Path], url: str, top_k: int | None, as_json: bool) -> int:
    results = predict_files(url, images, top_k)
    if as_json:
        print(
            json.dumps(
                [{"image": str(p), "predictions": r} for p, r in zip(images, results, strict=True)]
            )
        )
        return 0
    for path, predictions in zip(images, results, strict=True):
        print(path)
        for rank, prediction in enumerate(predictions, start=1):
            print(f"  {rank}. {prediction['label']:<30} {prediction['probability']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
