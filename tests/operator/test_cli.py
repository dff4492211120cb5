"""The `kubeclassify-operator` command line: defaults and the `crd` command."""

import subprocess
import sys
from pathlib import Path

import yaml
from kubeclassify_operator.cli import DEFAULT_LIVENESS, PEERING_NAME, parse_args


def test_runs_cluster_wide_with_peering_and_liveness_by_default() -> None:
    args = parse_args([])
    assert args.command is None  # `run` is the default
    assert args.namespace == []
    assert args.liveness == DEFAULT_LIVENESS == "http://0.0.0.0:8080/healthz"
    assert args.peering == PEERING_NAME and not args.standalone


def test_namespaces_and_standalone() -> None:
    args = parse_args(["run", "--namespace", "a", "--namespace", "b", "--standalone"])
    assert args.namespace == ["a", "b"]
    assert args.standalone


def test_console_script_prints_the_crd() -> None:
    command = Path(sys.executable).parent / "kubeclassify-operator"
    out = subprocess.run([str(command), "crd"], check=True, capture_output=True, text=True).stdout
    crd = yaml.safe_load(out)
    assert crd["metadata"]["name"] == "imageclassifiers.kubeclassify.io"
