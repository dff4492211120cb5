"""`kubeclassify-operator`: run the operator (default) or print the CRD."""

import argparse
import os
from pathlib import Path

import kopf

from kubeclassify_operator.crd import render_crd

PEERING_NAME = "kubeclassify"
DEFAULT_LIVENESS = "http://0.0.0.0:8080/healthz"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kubeclassify-operator", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    run = commands.add_parser("run", help="run the operator (the default command)")
    crd = commands.add_parser("crd", help="write the ImageClassifier CRD as YAML")
    crd.add_argument("--output", type=Path, help="file to write (default: stdout)")
    for sub in (parser, run):
        sub.add_argument(
            "--namespace",
            action="append",
            default=[],
            help="watch only this namespace (repeatable); default: the whole cluster",
        )
        sub.add_argument(
            "--liveness",
            default=os.environ.get("KUBECLASSIFY_LIVENESS", DEFAULT_LIVENESS),
            help=f"kopf liveness endpoint URL (default: {DEFAULT_LIVENESS})",
        )
        sub.add_argument(
            "--peering",
            default=PEERING_NAME,
            help="KopfPeering object shared by replicas so only one acts at a time",
        )
        sub.add_argument(
            "--standalone", action="store_true", help="no peering (single replica only)"
        )
        sub.add_argument("--verbose", action="store_true", help="log at debug level")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.command == "crd":
        if args.output is None:
            print(render_crd(), end="")
        else:
            args.output.write_text(render_crd(), encoding="utf-8")
        return
    # Importing registers the handlers with kopf's default registry.
    import kubeclassify_operator.handlers  # noqa: F401

    kopf.configure(verbose=args.verbose)
    kopf.run(
        memo=kopf.Memo(namespaces=args.namespace),
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=args.liveness,
        peering_name=None if args.standalone else args.peering,
        standalone=args.standalone,
    )
