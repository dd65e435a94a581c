"""Local processes on loopback: a private redis-server, `inferq worker` and `inferq serve`.

Used by ``scripts/demo``, the benchmarks and the tests, so that none of them
depends on another's code. Nothing here is for production: a deployment runs its
own Redis and its workers under a supervisor (see docs/deploy.md).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import suppress
from pathlib import Path

import redis

from jobs import keys


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A redis-server of our own on a free loopback port, in ``directory``."""

    def __init__(self, directory: Path, *, appendonly: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (scripts/setup-env.sh installs it)")
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        directory.mkdir(parents=True, exist_ok=True)
        self.args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "yes" if appendonly else "no", "--dir", str(directory),
                     "--maxmemory-policy", "noeviction", "--logfile", str(directory / "redis.log")]
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(self.args, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"redis-server did not start on {self.port}") from None
                time.sleep(0.05)
            finally:
                client.close()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Worker:
    """``inferq worker`` as a subprocess, with its own settings in the environment."""

    def __init__(self, broker_url: str, results: str, name: str, log_dir: Path,
                 **settings: str) -> None:
        self.name = name
        self.env = os.environ | {
            "INFERQ_BROKER_URL": broker_url, "INFERQ_RESULTS": results,
            "INFERQ_WORKER_NAME": name, "INFERQ_HEARTBEAT_SECONDS": "1",
        } | {f"INFERQ_{k.upper()}": v for k, v in settings.items()}
        self.log = log_dir / f"{name}.log"
        self.redis = redis.Redis.from_url(broker_url)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> Worker:
        inferq = str(Path(sys.executable).parent / "inferq")
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([inferq, "worker", "--loglevel", "INFO"],
                                            env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self.redis.exists(keys.worker(self.name)):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {self.name} did not come up:\n{self.log.read_text()}")
            time.sleep(0.1)
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process and self.process.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.kill(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
                self.process.wait()
        self.redis.close()


class Server:
    """``inferq serve`` as a subprocess on a free loopback port.

    ``settings`` become ``INFERQ_*`` variables (``api_keys="sk-1"`` is
    ``INFERQ_API_KEYS``); no other ``INFERQ_*`` variable of this process leaks in.
    """

    def __init__(self, broker_url: str, results: str, log: Path, *, port: int | None = None,
                 **settings: str) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [str(Path(sys.executable).parent / "inferq"), "--broker-url", broker_url,
                     "--results", results, "serve", "--port", str(self.port)]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("INFERQ_")} | {
            f"INFERQ_{k.upper()}": v for k, v in settings.items()}
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> Server:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.args, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/v1/models", timeout=1)
                return self
            except urllib.error.HTTPError:  # 401 without a key: it is up
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"inferq serve did not come up:\n"
                                       f"{self.log.read_text()}") from None
                time.sleep(0.1)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process and self.process.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            if sig == signal.SIGKILL:
                self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.kill(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
