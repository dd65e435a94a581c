"""Batches being validated: their create request in Redis, held by a lease.

``POST /v1/batches`` answers at once with a batch in ``validating``; the input file is
read and the job submitted in the background (`worker.server.batches`). Until the job
exists, the batch is its create request, ``inferq:batch:<job id>``, listed in
``inferq:batches:validating`` with the end of its lease as score. The server validating
it renews the lease every `RENEW` seconds; a lease that ran out belongs to a server that
stopped, and any server's sweep `claim`s it (atomically: one winner) and validates the
batch again. Once the job exists (queued, or failed with its errors) the request is
dropped (`finish`). Any server answers for a validating batch from its request.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import redis

from jobs import keys

#: Seconds a lease lasts without renewal; a stopped server's batches resume after it.
LEASE = 30.0
#: Seconds between renewals of the leases a server holds.
RENEW = 5.0

_CLAIM = """
local lease = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not lease or tonumber(lease) > tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
"""

_CANCEL = """
if redis.call('HEXISTS', KEYS[1], 'request') == 0 then return 0 end
redis.call('HSETNX', KEYS[1], 'cancelling_at', ARGV[1])
return 1
"""


class Pending:
    """The validating batches in one Redis, and the leases this server holds on them."""

    def __init__(self, client: redis.Redis, lease: float = LEASE) -> None:
        self.redis, self.lease = client, lease
        self._claim = client.register_script(_CLAIM)
        self._cancel = client.register_script(_CANCEL)
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def add(self, job_id: str, request: dict[str, Any]) -> None:
        """Record a batch to validate, leased to this server."""
        pipe = self.redis.pipeline()
        pipe.hset(keys.pending_batch(job_id), "request", json.dumps(request))
        pipe.zadd(keys.VALIDATING_BATCHES, {job_id: time.time() + self.lease})
        pipe.execute()
        self._hold(job_id)

    def get(self, job_id: str) -> dict[str, Any] | None:
        """The batch's create request (with ``cancelling_at`` once cancelled); None once
        its job exists, or for no such batch."""
        raw: Any = self.redis.hgetall(keys.pending_batch(job_id))
        if not raw or b"request" not in raw:
            return None
        request: dict[str, Any] = json.loads(raw[b"request"])
        if b"cancelling_at" in raw:
            request["cancelling_at"] = float(raw[b"cancelling_at"])
        return request

    def all(self) -> dict[str, dict[str, Any]]:
        """Every validating batch's request, by job id."""
        ids: Any = self.redis.zrange(keys.VALIDATING_BATCHES, 0, -1)
        found = {}
        for raw in ids:
            request = self.get(raw.decode())
            if request is not None:
                found[raw.decode()] = request
        return found

    def cancel(self, job_id: str) -> bool:
        """Mark a validating batch cancelled; its validator cancels the job it submits.
        False if the batch is no longer validating."""
        return bool(self._cancel(keys=[keys.pending_batch(job_id)], args=[time.time()]))

    def stale(self, now: float | None = None) -> list[str]:
        """Validating batches whose lease ran out: their server stopped."""
        ids: Any = self.redis.zrangebyscore(keys.VALIDATING_BATCHES, "-inf",
                                            time.time() if now is None else now)
        return [raw.decode() for raw in ids]

    def claim(self, job_id: str) -> bool:
        """Take over a batch whose lease ran out; True for exactly one claimant."""
        now = time.time()
        won = bool(self._claim(keys=[keys.VALIDATING_BATCHES],
                               args=[job_id, now, now + self.lease]))
        if won:
            self._hold(job_id)
        return won

    def finish(self, job_id: str) -> None:
        """The batch's job exists: drop its request and lease."""
        with self._lock:
            self._held.discard(job_id)
        pipe = self.redis.pipeline()
        pipe.delete(keys.pending_batch(job_id))
        pipe.zrem(keys.VALIDATING_BATCHES, job_id)
        pipe.execute()

    def release(self, job_id: str) -> None:
        """Stop renewing the batch's lease: a server's sweep resumes it once it runs out."""
        with self._lock:
            self._held.discard(job_id)

    def close(self) -> None:
        self._stop.set()

    def _hold(self, job_id: str) -> None:
        with self._lock:
            self._held.add(job_id)
            if self._renewer is None:
                self._renewer = threading.Thread(target=self._renew, daemon=True,
                                                 name="inferq-validating-leases")
                self._renewer.start()

    def _renew(self) -> None:
        while not self._stop.wait(min(RENEW, self.lease / 3)):
            with self._lock:
                held = list(self._held)
            if not held:
                continue
            try:  # XX: only batches still validating (another may have finished them)
                self.redis.zadd(keys.VALIDATING_BATCHES,
                                dict.fromkeys(held, time.time() + self.lease), xx=True)
            except redis.RedisError:
                continue  # renewed at the next turn, or resumed by another server
