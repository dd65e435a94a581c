"""A real S3-compatible server on loopback for tests: moto's server mode, as a process.

pyarrow's S3 filesystem takes its endpoint from the URI's query string, so one
string names the place for every process (``s3://bucket/prefix?endpoint_override=
127.0.0.1:PORT&scheme=http&region=us-east-1``); credentials come from the
environment (`CREDENTIALS`), as they would from a deployment's secrets.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow.fs as pafs

from worker.local import free_port

#: moto accepts any keys; pyarrow needs some. AWS_EC2_METADATA_DISABLED keeps the AWS SDK
#: from asking an instance-metadata address for credentials (nothing beyond loopback).
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_EC2_METADATA_DISABLED": "true", "AWS_DEFAULT_REGION": "us-east-1"}


class MotoServer:
    """``moto_server`` on a free loopback port; `bucket` makes a fresh bucket's URI."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.log = log
        moto = str(Path(sys.executable).parent / "moto_server")
        with open(log, "ab") as out:
            self.process = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(self.port)],
                                            stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto_server did not start:\n{log.read_text()}") \
                        from None
                time.sleep(0.1)

    def filesystem(self) -> pafs.S3FileSystem:
        return pafs.S3FileSystem(
            access_key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            secret_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"], region="us-east-1",
            endpoint_override=self.endpoint, scheme="http", allow_bucket_creation=True)

    def bucket(self, prefix: str = "inferq") -> str:
        """A new bucket's URI with ``prefix``, endpoint in the query string."""
        name = f"b-{uuid.uuid4().hex[:12]}"
        self.filesystem().create_dir(name)
        return (f"s3://{name}/{prefix}?endpoint_override={self.endpoint}&scheme=http"
                "&region=us-east-1")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
