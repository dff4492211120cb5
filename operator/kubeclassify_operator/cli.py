"""`kubeclassify-operator`: run the operator (default) or print the CRD."""

import argparse
import asyncio
import hashlib
import logging
import os
import re
import signal
import socket
import sys
import threading
import uuid
from pathlib import Path
from types import FrameType

import kopf

from kubeclassify_operator import handlers
from kubeclassify_operator.crd import render_crd
from kubeclassify_operator.kube import Kube, load_config
from kubeclassify_operator.leader import Elector, LeaseUnavailable
from kubeclassify_operator.probe import LivenessProbe, ProbeError

LEASE_NAME = "kubeclassify-operator"
LEASE_NAMESPACE = "kubeclassify-system"  # where deploy/ runs the operator
DEFAULT_LIVENESS = "http://0.0.0.0:8080/healthz"
# Stopping must fit the Deployment's 30 s grace period, even with the API server hung: kopf
# waits for the handler threads it started, and a pass blocked on a request holds it up.
# After this long the rest is abandoned (passes are idempotent: the next leader redoes them).
STOP_SECONDS = 15.0
# kopf's routine successes, logged at INFO by kopf: debug here.
_ROUTINE = re.compile(r"^Handler '.*' succeeded\.$|^\w+ is processed: \d+ succeeded; 0 failed\.$")

logger = logging.getLogger(__name__)


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
            help=f"liveness endpoint URL (default: {DEFAULT_LIVENESS})",
        )
        sub.add_argument(
            "--lease",
            help=f"Lease that replicas elect their leader in (default: {LEASE_NAME}, "
            "suffixed with the --namespace names if any)",
        )
        sub.add_argument(
            "--lease-namespace",
            default=os.environ.get("POD_NAMESPACE") or LEASE_NAMESPACE,
            help=f"namespace of the Lease (default: $POD_NAMESPACE, else {LEASE_NAMESPACE})",
        )
        sub.add_argument(
            "--standalone",
            action="store_true",
            help="act at once, without leader election (one replica only)",
        )
        sub.add_argument("--verbose", action="store_true", help="log at debug level")
    return parser.parse_args(argv)


def lease_name(namespaces: list[str]) -> str:
    """One Lease per set of watched namespaces: operators for different namespaces both act."""
    if not namespaces:
        return LEASE_NAME
    name = "-".join([LEASE_NAME, *sorted(set(namespaces))])
    if len(name) > 253:  # a DNS subdomain
        name = f"{LEASE_NAME}-{hashlib.sha256(name.encode()).hexdigest()[:16]}"
    return name


def identity() -> str:
    """This replica's name in the Lease: the pod's (deploy/ sets POD_ID), else host and a
    random part, so two processes never mistake each other for themselves."""
    return os.environ.get("POD_ID") or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


class RoutineSuccesses(logging.Filter):
    """Turns kopf's INFO line for every handler that succeeded into a DEBUG line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and _ROUTINE.match(str(record.msg)):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.command == "crd":
        if args.output is None:
            print(render_crd(), end="")
        else:
            args.output.write_text(render_crd(), encoding="utf-8")
        return
    kopf.configure(verbose=args.verbose, log_prefix=True)
    logging.getLogger("kopf.objects").addFilter(RoutineSuccesses())
    if not args.verbose:  # a line per liveness probe otherwise
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    try:
        probe = LivenessProbe(args.liveness)
    except ProbeError as exc:
        sys.exit(f"kubeclassify-operator: cannot serve --liveness {args.liveness}: {exc}")
    elector = None
    if not args.standalone:
        elector = Elector(
            Kube(load_config(retries=0)),  # the renewal has a deadline: no silent retries
            args.lease_namespace,
            args.lease or lease_name(args.namespace),
            identity(),
        )
        if not _stand_by(elector):
            probe.close()
            return
    ending = Ending(elector)
    if elector is not None:
        threading.Thread(
            target=elector.keep, args=(threading.Event(), ending.lost), daemon=True
        ).start()
    try:
        asyncio.run(_operate(args, probe, ending))
    except Exception:
        logger.exception("The operator stopped on an error")
        ending.finish(1)
    ending.finish(0)


async def _operate(args: argparse.Namespace, probe: LivenessProbe, ending: "Ending") -> None:
    """kopf, with our own SIGTERM/SIGINT handling once it runs: passes in flight are told at
    once (kopf's own handler stops kopf only after they end), and the stop is bounded."""
    stop, ready = asyncio.Event(), asyncio.Event()
    memo = kopf.Memo(namespaces=args.namespace)
    operator = asyncio.create_task(
        kopf.operator(
            registry=handlers.registry(),
            memo=memo,
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            standalone=True,  # the Lease decides who acts, not kopf's peering
            stop_flag=stop,
            ready_flag=ready,
        )
    )
    await asyncio.wait(
        {operator, asyncio.create_task(ready.wait())}, return_when=asyncio.FIRST_COMPLETED
    )

    def terminate(signum: int) -> None:
        logger.info("Signal %s received: stopping", signal.Signals(signum).name)
        ending.terminating.set()
        handlers.stop_passes(memo)
        stop.set()
        watchdog = threading.Timer(STOP_SECONDS, ending.finish, (0,), {"abandoned": True})
        watchdog.daemon = True
        watchdog.start()

    loop = asyncio.get_running_loop()
    probe.loop = loop  # liveness now means: kopf's loop responds
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, terminate, signum)  # replaces kopf's handler
    await operator


class Ending:
    """How the process ends, from whichever thread gets there first (the main thread, the stop
    watchdog, the Lease's keeper): the Lease released once acting has stopped (a standby takes
    it at once), then exit, whatever threads are still blocked on the API server."""

    def __init__(self, elector: Elector | None) -> None:
        self.elector = elector
        self.terminating = threading.Event()  # told to stop (SIGTERM/SIGINT)
        self._finishing = threading.Lock()  # the watchdog or the main thread, never both

    def finish(self, code: int, abandoned: bool = False) -> None:
        with self._finishing:
            if abandoned:
                logger.warning(
                    "Not stopped within %.0fs: abandoning passes in flight", STOP_SECONDS
                )
            if self.elector is not None:
                self.elector.release()
            logging.shutdown()
            os._exit(code)

    def lost(self, reason: str) -> None:
        """Leadership is gone: stop acting at once; Kubernetes restarts the pod as a standby.
        (While stopping anyway, that is just the end of the stop.)"""
        if self.terminating.is_set():
            logger.warning("Stopped: %s", reason)
            logging.shutdown()
            os._exit(0)
        logger.error("Lost the leadership: %s; exiting so that another replica acts", reason)
        logging.shutdown()
        os._exit(1)


def _stand_by(elector: Elector) -> bool:
    """Wait for the Lease; False if told to stop first. A setup error ends the process."""
    stop = threading.Event()

    def stopping(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, stopping) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return elector.wait_until_leader(stop)
    except LeaseUnavailable as exc:
        sys.exit(f"kubeclassify-operator: {exc}")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
