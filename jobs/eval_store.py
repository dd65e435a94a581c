"""Where evaluation scores live for watchers: latest per suite and target, bounded
history, claimed schedule slots, a stream of alerts, and the follow-up jobs runs ask
for: a confirmation re-run, a judge job (taken by beat or by `inferq eval run --wait`,
each once).
Redis and in-memory."""

from __future__ import annotations

import json
import threading
from typing import Any, Protocol

from jobs import keys

HISTORY = 200            #: runs kept per suite and target
ALERTS_MAXLEN = 1000
SLOT_SECONDS = 40 * 86400  #: a claimed slot is remembered this long


class EvalStore(Protocol):
    def record(self, summary: dict[str, Any]) -> None:
        """Store a run as its target's latest and at the head of its history."""
        ...

    def latest(self, suite: str) -> dict[str, dict[str, Any]]:
        """Target -> the latest run's summary."""
        ...

    def history(self, suite: str, target: str | None = None,
                limit: int = 50) -> list[dict[str, Any]]:
        """Runs, newest first; every target's when ``target`` is None."""
        ...

    def claim_slot(self, suite: str, slot: int) -> bool:
        """True for the first claim of a schedule slot, ever (within SLOT_SECONDS)."""
        ...

    def alert(self, summary: dict[str, Any]) -> None: ...

    def alerts(self, limit: int = 100) -> list[dict[str, Any]]: ...

    def request(self, kind: str, request: dict[str, Any]) -> None:
        """Ask for a follow-up job of ``kind`` for run ``request["job_id"]``: "confirm" (one
        re-run of a breached run before alerting) or "judge" (the judge job of a run)."""
        ...

    def requests(self, kind: str) -> list[dict[str, Any]]:
        """The follow-up jobs of ``kind`` asked for and not yet taken."""
        ...

    def take(self, kind: str, job_id: str) -> bool:
        """Claim the follow-up of ``kind`` asked for by ``job_id``: True for one caller."""
        ...


class RedisEvalStore:
    def __init__(self, client: Any) -> None:
        self.redis = client

    def record(self, summary: dict[str, Any]) -> None:
        suite, target = summary["suite"], summary["target"]
        encoded = json.dumps(summary)
        pipe = self.redis.pipeline()
        pipe.sadd(keys.EVAL_SUITES, suite)
        pipe.hset(keys.eval_latest(suite), target, encoded)
        pipe.lpush(keys.eval_history(suite, target), encoded)
        pipe.ltrim(keys.eval_history(suite, target), 0, HISTORY - 1)
        pipe.execute()

    def latest(self, suite: str) -> dict[str, dict[str, Any]]:
        raw = self.redis.hgetall(keys.eval_latest(suite))
        return {k.decode(): json.loads(v) for k, v in raw.items()}

    def history(self, suite: str, target: str | None = None,
                limit: int = 50) -> list[dict[str, Any]]:
        targets = [target] if target else sorted(self.latest(suite))
        runs = [json.loads(raw) for t in targets
                for raw in self.redis.lrange(keys.eval_history(suite, t), 0, limit - 1)]
        return sorted(runs, key=lambda r: -r["finished_at"])[:limit]

    def claim_slot(self, suite: str, slot: int) -> bool:
        return bool(self.redis.set(keys.eval_slot(suite, slot), 1, nx=True, ex=SLOT_SECONDS))

    def alert(self, summary: dict[str, Any]) -> None:
        self.redis.xadd(keys.ALERTS, {"alert": json.dumps(summary)}, maxlen=ALERTS_MAXLEN,
                        approximate=True)

    def alerts(self, limit: int = 100) -> list[dict[str, Any]]:
        entries = self.redis.xrevrange(keys.ALERTS, count=limit)
        return [json.loads(fields[b"alert"]) for _, fields in entries]

    def request(self, kind: str, request: dict[str, Any]) -> None:
        self.redis.hset(keys.eval_requests(kind), request["job_id"], json.dumps(request))

    def requests(self, kind: str) -> list[dict[str, Any]]:
        raw = self.redis.hgetall(keys.eval_requests(kind))
        return [json.loads(v) for _, v in sorted(raw.items())]

    def take(self, kind: str, job_id: str) -> bool:
        return bool(self.redis.hdel(keys.eval_requests(kind), job_id))


class MemoryEvalStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._history: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._slots: set[tuple[str, int]] = set()
        self._alerts: list[dict[str, Any]] = []
        self._requests: dict[tuple[str, str], dict[str, Any]] = {}

    def record(self, summary: dict[str, Any]) -> None:
        with self._lock:
            runs = self._history.setdefault((summary["suite"], summary["target"]), [])
            runs.insert(0, dict(summary))
            del runs[HISTORY:]

    def latest(self, suite: str) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {t: runs[0] for (s, t), runs in self._history.items() if s == suite and runs}

    def history(self, suite: str, target: str | None = None,
                limit: int = 50) -> list[dict[str, Any]]:
        with self._lock:
            runs = [r for (s, t), rs in self._history.items()
                    if s == suite and (target is None or t == target) for r in rs]
        return sorted(runs, key=lambda r: -r["finished_at"])[:limit]

    def claim_slot(self, suite: str, slot: int) -> bool:
        with self._lock:
            if (suite, slot) in self._slots:
                return False
            self._slots.add((suite, slot))
            return True

    def alert(self, summary: dict[str, Any]) -> None:
        with self._lock:
            self._alerts.insert(0, summary)

    def alerts(self, limit: int = 100) -> list[dict[str, Any]]:
        with self._lock:
            return self._alerts[:limit]

    def request(self, kind: str, request: dict[str, Any]) -> None:
        with self._lock:
            self._requests[kind, request["job_id"]] = dict(request)

    def requests(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [r for (k, _), r in sorted(self._requests.items()) if k == kind]

    def take(self, kind: str, job_id: str) -> bool:
        with self._lock:
            return self._requests.pop((kind, job_id), None) is not None
