"""Workers advertise themselves in Redis: what they serve, what they are doing.

A heartbeat thread rewrites ``inferq:worker:<name>`` (expiring after a few
missed beats) and stamps ``inferq:workers``; submitters read the live ones to
refuse jobs nobody can run.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from jobs import keys

log = logging.getLogger("inferq.advertise")

MISSED_BEATS = 4


class Heartbeat:
    """Publishes ``describe()`` every ``interval`` seconds until stopped."""

    def __init__(self, client: redis.Redis, name: str, describe: Callable[[], dict[str, Any]],
                 interval: float = 5.0) -> None:
        self.redis = client
        self.name = name
        self.describe = describe
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inferq-heartbeat", daemon=True)

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def beat(self) -> None:
        info = self.describe() | {"name": self.name, "host": socket.gethostname(),
                                  "pid": os.getpid(), "heartbeat_at": time.time()}
        ttl = max(1, int(self.interval * MISSED_BEATS))
        pipe = self.redis.pipeline()
        pipe.set(keys.worker(self.name), json.dumps(info), ex=ttl)
        pipe.zadd(keys.WORKERS, {self.name: info["heartbeat_at"]})
        pipe.execute()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except redis.RedisError as exc:  # keep beating once Redis is back
                log.warning("heartbeat failed: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval + 1)
        try:
            self.redis.delete(keys.worker(self.name))
            self.redis.zrem(keys.WORKERS, self.name)
        except redis.RedisError:
            pass


def live_workers(client: redis.Redis) -> list[dict[str, Any]]:
    """Advertisements of the workers whose heartbeat has not expired."""
    members: Any = client.zrange(keys.WORKERS, 0, -1)
    names = [n.decode() for n in members]
    if not names:
        return []
    found = client.mget([keys.worker(n) for n in names])
    gone = [n for n, raw in zip(names, found, strict=True) if raw is None]
    if gone:
        client.zrem(keys.WORKERS, *gone)
    return [json.loads(raw) for raw in found if raw is not None]
