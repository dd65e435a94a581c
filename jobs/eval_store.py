"""Where evaluation scores live for watchers: latest per suite and target, bounded
history, claimed schedule slots, a stream of alerts, and the confirmation re-runs
breached runs ask for (taken by beat or by `inferq eval run --wait`, each once).
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

    def request_confirmation(self, request: dict[str, Any]) -> None:
        """Ask for one re-run of a breached run (``request["job_id"]``) before alerting."""
        ...

    def confirmations(self) -> list[dict[str, Any]]:
        """The confirmation re-runs asked for and not yet taken."""
        ...

    def take_confirmation(self, job_id: str) -> bool:
        """Claim the re-run asked for by ``job_id``: True for exactly one caller."""
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

    def request_confirmation(self, request: dict[str, Any]) -> None:
        self.redis.hset(keys.EVAL_CONFIRMATIONS, request["job_id"], json.dumps(request))

    def confirmations(self) -> list[dict[str, Any]]:
        raw = self.redis.hgetall(keys.EVAL_CONFIRMATIONS)
        return [json.loads(v) for _, v in sorted(raw.items())]

    def take_confirmation(self, job_id: str) -> bool:
        return bool(self.redis.hdel(keys.EVAL_CONFIRMATIONS, job_id))


class MemoryEvalStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._history: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._slots: set[tuple[str, int]] = set()
        self._alerts: list[dict[str, Any]] = []
        self._confirmations: dict[str, dict[str, Any]] = {}

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

    def request_confirmation(self, request: dict[str, Any]) -> None:
        with self._lock:
            self._confirmations[request["job_id"]] = dict(request)

    def confirmations(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._confirmations[k] for k in sorted(self._confirmations)]

    def take_confirmation(self, job_id: str) -> bool:
        with self._lock:
            return self._confirmations.pop(job_id, None) is not None
