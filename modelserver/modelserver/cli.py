"""`modelserver serve | predict | fetch | fetch-weights | convert | quantize`: the command line."""

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
from .models.registry import baked_ir, check_settings, installed
from .weights import WeightsUnavailable, int8_ir_beside, resolve_weights


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

    convert = commands.add_parser(
        "convert",
        help="write the OpenVINO IR of a Keras model, which OpenVINO then serves without "
        "TensorFlow (converting needs TensorFlow)",
    )
    convert.add_argument(
        "model_file", nargs="?", type=Path, help="a .keras file (default: the built-in ResNet50)"
    )
    convert.add_argument("--weights", default="imagenet", help="ResNet50 weights, as for serve")
    convert.add_argument(
        "--output",
        type=Path,
        help="the IR's .xml (default: beside the .keras file, or <weights>.xml beside the "
        "weights, where serve finds it)",
    )

    quantize = commands.add_parser(
        "quantize", help="write an INT8 OpenVINO IR by post-training quantization (NNCF)"
    )
    quantize.add_argument("--calibration", type=Path, required=True, help="folder of images")
    quantize.add_argument(
        "--held-out",
        type=Path,
        required=True,
        help="folder of other images, on which INT8 must give FP32's top-1",
    )
    quantize.add_argument(
        "--threshold", type=float, default=0.99, help="least top-1 agreement (default 0.99)"
    )
    quantize.add_argument(
        "--output", type=Path, help="the IR's .xml (default: <model>.int8.xml beside the model)"
    )
    quantize.add_argument("--weights", default="imagenet", help="ResNet50 weights, as for serve")
    quantize.add_argument("--model-file", type=Path, help="quantize this model file instead")
    quantize.add_argument("--labels", type=Path, help="labels for --model-file")
    quantize.add_argument("--cache-dir", type=Path, help="CACHE_DIR, as for serve")

    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "predict":
            return _predict(args.images, args.url, args.top_k, args.json)
        if args.command == "fetch":
            return fetch_command.run(args)
        if args.command == "quantize":
            return _quantize(args)
        if args.command == "convert":
            return _convert(args.model_file, args.weights, args.output)
        source = resolve_weights(args.source)
        # A fresh image has no folder for the weights yet (Dockerfile.server's /opt/weights).
        args.output.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, args.output)
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
    try:
        check_settings(settings)
        if settings.model_file is None and baked_ir(settings) is None:
            env["MODEL_WEIGHTS"] = str(resolve_weights(settings.weights))
    except (ModelLoadError, WeightsUnavailable) as error:
        # The mark a worker's load failure logs too: the operator reads either line from the
        # container's termination message as ModelLoadFailed, with its reason.
        print(f"modelserver: cannot serve: {error}", file=sys.stderr)
        return 2
    # gunicorn under our master (see `master`). `-P`: the working directory stays off sys.path,
    # where a source checkout's `modelserver/` folder would shadow the package.
    python = sys.executable
    os.execve(
        python,
        [python, "-P", "-m", "modelserver.master", "-c", "python:modelserver.gunicorn_conf"],
        env,
    )


def _quantize(args: argparse.Namespace) -> int:
    """INT8 IR of the model, or exit 1 with the agreement figure when it falls short."""
    from .models.quantize import QuantizationRefused, quantize

    settings = Settings(
        weights=args.weights,
        model_file=args.model_file,
        labels_file=args.labels,
        cache_dir=args.cache_dir,
        backend="openvino",
        precision="fp32",
    )
    check_settings(settings)
    source = args.model_file or resolve_weights(args.weights)
    output = args.output or int8_ir_beside(source)
    try:
        agreement, images = quantize(
            settings, args.calibration, args.held_out, output, args.threshold
        )
    except QuantizationRefused as refused:
        print(f"modelserver: {refused}", file=sys.stderr)
        return 1
    print(
        f"INT8 IR written to {output}: top-1 agrees with FP32 on {agreement:.1%} of "
        f"{images} held-out images"
    )
    return 0


def _convert(model_file: Path | None, weights: str, output: Path | None) -> int:
    if model_file is not None and model_file.suffix != ".keras":
        raise ValueError(f"{model_file}: expected a .keras file (OpenVINO reads the others)")
    if not (installed("tensorflow") and installed("openvino")):
        raise ModelLoadError(
            "converting needs TensorFlow and OpenVINO: install 'kubeclassify-modelserver[cpu]'"
            " (or run it in the TensorFlow image)"
        )
    from .models.openvino import convert

    print(f"OpenVINO IR written to {convert(model_file, weights, output)}")
    return 0


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
