"""`RedisJobStore`: the job store shared by submitters and workers.

Chunk completion is recorded by set membership: one Lua script does ``HSETNX``
on the job's done-hash and, only when that chunk was new, moves the counts and
metric totals (the job's, and the deployment's by model and backend in
``inferq:totals``, which the metrics exporters report). A redelivered chunk therefore
changes nothing, and the counts can always be rebuilt from the done-hash (`inferq
reconcile`).

Retention: a job records its retention when created; the state change that ends it
sets that TTL on every key of the job's state (`keys.job_keys`) in the same script,
and an id whose hash has expired is pruned from the index (with any key written
after the end) when the store next meets it (`prune`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import redis

from jobs import keys
from jobs.errors import JobNotFound
from jobs.eval_store import EvalStore, RedisEvalStore
from jobs.inputs import REDIS, ChunkInputs, inputs_at
from jobs.lifecycle import TERMINAL, ChunkSummary, JobState, JobStatus
from jobs.rows import InputRow
from jobs.schema import METRIC_FIELDS
from jobs.spec import JobSpec
from jobs.store import ChunkStart

#: Rows the live stream keeps (in entries of a chunk's rows each; approximately).
STREAM_MAXLEN = 10_000
#: A stream entry's field: its rows, one JSON object a line (entries an earlier inferq
#: wrote hold one row in a field named ``row``: `stream_rows` reads both).
STREAM_FIELD = "rows"
FINALIZE_LOCK_SECONDS = 3600
#: How long an ended job's state stays in Redis (7 days); 0 = kept until deleted.
DEFAULT_RETENTION_SECONDS = 7 * 24 * 3600

_COMPLETE = """
if redis.call('EXISTS', KEYS[2]) == 0 then return -2 end
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return -1 end
redis.call('HINCRBY', KEYS[2], 'completed', tonumber(ARGV[3]) - tonumber(ARGV[4]))
redis.call('HINCRBY', KEYS[2], 'failed', tonumber(ARGV[4]))
local ok, spec = pcall(cjson.decode, redis.call('HGET', KEYS[2], 'spec') or '')
local model = (ok and type(spec) == 'table' and spec['model']) and tostring(spec['model']) or '-'
for i = 5, #ARGV, 2 do
  redis.call('HINCRBYFLOAT', KEYS[3], ARGV[i], ARGV[i + 1])
  redis.call('HINCRBYFLOAT', KEYS[4], model .. '|' .. ARGV[i], ARGV[i + 1])
end
return {redis.call('HLEN', KEYS[1]), tonumber(redis.call('HGET', KEYS[2], 'chunks') or '0')}
"""

# A delivery begins (`JobStore.begin_chunk`): KEYS job, done, attempts, cancel; ARGV chunk,
# now, the terminal states. Nil when the job is gone.
_BEGIN = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return nil end
for i = 3, #ARGV do if ARGV[i] == state then return {state, 0} end end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return {state, 1} end
local attempt = redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
local cancel = redis.call('EXISTS', KEYS[4])
if cancel == 0 and state == 'queued' then
  state = 'in_progress'
  redis.call('HSET', KEYS[1], 'state', state, 'in_progress_at', ARGV[2])
end
return {state, 0, attempt, cancel, redis.call('HGET', KEYS[1], 'spec')}
"""

_SET_STATE = """
local current = redis.call('HGET', KEYS[1], 'state')
if not current then return -1 end
if #ARGV > 4 then
  local allowed = false
  for i = 5, #ARGV do if ARGV[i] == current then allowed = true end end
  if not allowed then return 0 end
end
redis.call('HSET', KEYS[1], 'state', ARGV[1], ARGV[1] .. '_at', ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[3]) end
local ttl = tonumber(redis.call('HGET', KEYS[1], 'retention') or ARGV[4])
if #KEYS > 1 and ttl > 0 then
  for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ttl) end
end
return 1
"""

# An index entry whose job hash is gone (expired, deleted): drop it and any key of the
# job written after its end (a late worker's stream or attempt), which has no TTL.
_PRUNE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
for i = 3, #KEYS do redis.call('DEL', KEYS[i]) end
return 1
"""


_SET_COUNTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'total', ARGV[1], 'chunks', ARGV[2])
return 1
"""


def stream_rows(fields: dict[bytes, bytes]) -> list[str]:
    """The rows of one live-stream entry, one JSON object each (as ``XREAD`` returns
    its fields)."""
    lines = fields.get(STREAM_FIELD.encode())
    if lines is not None:
        return lines.decode().split("\n")
    row = fields.get(b"row")
    return [row.decode()] if row is not None else []


class RedisJobStore:
    """A `JobStore` on a Redis server."""

    def __init__(self, client: redis.Redis, *,
                 retention_seconds: int = DEFAULT_RETENTION_SECONDS,
                 results_root: str | None = None) -> None:
        """``retention_seconds``: kept by the jobs this store creates (0 = forever), and
        applied to a job that ends without one recorded (created by an older inferq).
        ``results_root``: this process's results location, where jobs whose spec says
        ``inputs="results"`` keep their chunk inputs (None: results go through Redis)."""
        if retention_seconds < 0:
            raise ValueError(f"retention_seconds={retention_seconds}: use 0 (keep) or more")
        self.redis = client
        self.results_root = results_root
        self._inputs: dict[str, ChunkInputs] = {}
        #: Where the jobs this store created or read keep their inputs (a job's never
        #: changes): a submit stores, and a worker reads, thousands of chunks without
        #: asking Redis each time (bounded: workers and `inferq serve` live long).
        self._locations: dict[str, str] = {}
        self.retention_seconds = retention_seconds
        self._complete = client.register_script(_COMPLETE)
        self._begin = client.register_script(_BEGIN)
        self._set_state = client.register_script(_SET_STATE)
        self._set_counts = client.register_script(_SET_COUNTS)
        self._prune = client.register_script(_PRUNE)
        self.evaluations: EvalStore = RedisEvalStore(client)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisJobStore:
        return cls(redis.Redis.from_url(url, **kwargs))

    def create_job(self, spec: JobSpec, *, total: int, chunks: int) -> bool:
        key = keys.job(spec.job_id)
        now = time.time()
        fields: dict[Any, Any] = {
            "state": JobState.VALIDATING, "validating_at": now, "total": total, "chunks": chunks,
            "completed": 0, "failed": 0, "spec": json.dumps(spec.to_dict()),
            "retention": self.retention_seconds}
        if spec.inputs != REDIS:
            fields["inputs"] = spec.inputs
        if not self.redis.hsetnx(key, "job_id", spec.job_id):
            return False
        self._remember_location(spec.job_id, spec.inputs)
        pipe = self.redis.pipeline()
        pipe.hset(key, mapping=fields)
        pipe.zadd(keys.JOBS, {spec.job_id: spec.created_at})
        pipe.execute()
        return True

    def _remember_location(self, job_id: str, location: str) -> None:
        if len(self._locations) >= 1024:
            self._locations.clear()
        self._locations[job_id] = location

    def put_chunk_input(self, job_id: str, chunk: int, rows: Sequence[InputRow]) -> None:
        self.inputs_of(job_id).put(job_id, chunk, rows)

    def get_chunk_input(self, job_id: str, chunk: int) -> list[InputRow]:
        return self.inputs_of(job_id).get(job_id, chunk)

    def inputs_of(self, job_id: str) -> ChunkInputs:
        """Where the job's chunk inputs live, as its spec recorded (``inputs`` in the
        job's hash; absent = Redis, as for every job before the setting)."""
        location = self._locations.get(job_id)
        if location is None:
            reply: Any = self.redis.hmget(keys.job(job_id), ["inputs", "job_id"])
            raw, exists = reply
            location = raw.decode() if raw else REDIS
            if exists:  # a job not there yet (or gone) is asked again next time
                self._remember_location(job_id, location)
        if location not in self._inputs:
            self._inputs[location] = inputs_at(location, redis=self.redis,
                                               results_root=self.results_root)
        return self._inputs[location]

    def set_counts(self, job_id: str, *, total: int, chunks: int) -> None:
        if not self._set_counts(keys=[keys.job(job_id)], args=[total, chunks]):
            raise JobNotFound(job_id)

    def get_spec(self, job_id: str) -> JobSpec:
        raw = self.redis.hget(keys.job(job_id), "spec")
        if raw is None:
            raise JobNotFound(job_id)
        return JobSpec.from_dict(json.loads(raw))

    def status(self, job_id: str) -> JobStatus:
        pipe = self.redis.pipeline()
        pipe.hgetall(keys.job(job_id))
        pipe.hlen(keys.done(job_id))
        pipe.hgetall(keys.metrics(job_id))
        raw, done, metric_fields = pipe.execute()
        if not raw:
            raise JobNotFound(job_id)
        data = {k.decode(): v.decode() for k, v in raw.items()}
        metrics: dict[str, dict[str, float]] = {}
        for name, value in metric_fields.items():
            backend, _, field = name.decode().partition("|")
            metrics.setdefault(backend, {})[field] = float(value)
        return JobStatus(
            job_id=job_id, state=JobState(data["state"]), total=int(data.get("total", 0)),
            completed=int(data.get("completed", 0)), failed=int(data.get("failed", 0)),
            chunks=int(data.get("chunks", 0)), chunks_done=int(done),
            timestamps={k: float(v) for k, v in data.items() if k.endswith("_at")},
            error=data.get("error", ""), alert=data.get("alert", ""), metrics=metrics)

    def set_state(self, job_id: str, state: str, *, error: str = "",
                  only_from: Sequence[str] = ()) -> bool:
        ending = state in TERMINAL  # the job's state keys get its retention as TTL
        chunks = int(self.redis.hget(keys.job(job_id), "chunks") or 0) if ending else 0
        result = self._set_state(
            keys=keys.job_keys(job_id, chunks) if ending else [keys.job(job_id)],
            args=[state, time.time(), error, self.retention_seconds, *only_from])
        if result == -1:
            raise JobNotFound(job_id)
        return bool(result == 1)

    def start_attempt(self, job_id: str, chunk: int) -> int:
        return int(self.redis.hincrby(keys.attempts(job_id), str(chunk), 1))

    def begin_chunk(self, job_id: str, chunk: int) -> ChunkStart:
        found: Any = self._begin(
            keys=[keys.job(job_id), keys.done(job_id), keys.attempts(job_id),
                  keys.cancel(job_id)],
            args=[chunk, time.time(), *TERMINAL])
        if found is None:
            raise JobNotFound(job_id)
        state = found[0].decode()
        if len(found) == 2:
            return ChunkStart(state, recorded=bool(found[1]))
        return ChunkStart(state, attempt=int(found[2]), cancel_requested=bool(found[3]),
                          spec=JobSpec.from_dict(json.loads(found[4])))

    def complete_chunk(self, job_id: str, chunk: int, summary: ChunkSummary) -> int | None:
        counts = self.complete_chunk_counts(job_id, chunk, summary)
        return None if counts is None else counts[0]

    def complete_chunk_counts(self, job_id: str, chunk: int,
                              summary: ChunkSummary) -> tuple[int, int] | None:
        backend = summary.backend or "-"
        metric_args: list[Any] = []
        for name in METRIC_FIELDS if summary.rows else ():  # a cancelled chunk ran nothing
            metric_args += [f"{backend}|{name}", getattr(summary, name)]
        done: Any = self._complete(
            keys=[keys.done(job_id), keys.job(job_id), keys.metrics(job_id), keys.TOTALS],
            args=[chunk, json.dumps(summary.to_dict()), summary.rows, summary.errors,
                  *metric_args])
        if done == -2:
            raise JobNotFound(job_id)
        return None if done == -1 else (int(done[0]), int(done[1]))

    def done_chunks(self, job_id: str) -> dict[int, ChunkSummary]:
        raw = self.redis.hgetall(keys.done(job_id))
        return {int(k): ChunkSummary.from_dict(json.loads(v)) for k, v in raw.items()}

    def chunk_done(self, job_id: str, chunk: int) -> bool:
        return bool(self.redis.hexists(keys.done(job_id), str(chunk)))

    def load_isolation(self, job_id: str, chunk: int) -> dict[str, Any] | None:
        raw = self.redis.get(keys.isolation(job_id, chunk))
        return json.loads(raw) if raw is not None else None

    def save_isolation(self, job_id: str, chunk: int, state: dict[str, Any]) -> None:
        self.redis.set(keys.isolation(job_id, chunk), json.dumps(state, default=str))

    def set_alert(self, job_id: str, alert: str) -> None:
        self.redis.hset(keys.job(job_id), "alert", alert)

    def request_cancel(self, job_id: str) -> None:
        self.redis.set(keys.cancel(job_id), 1)

    def cancel_requested(self, job_id: str) -> bool:
        return bool(self.redis.exists(keys.cancel(job_id)))

    def publish_rows(self, job_id: str, rows: Sequence[dict[str, Any]]) -> None:
        """One stream entry for the lot (a chunk's rows), its ``rows`` field one JSON
        object a line: one XADD a chunk, where one a row was 40% of the queue's cost a
        chunk. The stream keeps about `STREAM_MAXLEN` rows' worth of entries."""
        if not rows:
            return
        lines = "\n".join(json.dumps(row, default=str) for row in rows)
        self.redis.xadd(keys.stream(job_id), {STREAM_FIELD: lines},
                        maxlen=max(1, STREAM_MAXLEN // len(rows)), approximate=True)

    def claim_finalize(self, job_id: str) -> bool:
        return bool(self.redis.set(keys.finalize(job_id), 1, nx=True, ex=FINALIZE_LOCK_SECONDS))

    def drop_inputs(self, job_id: str) -> None:
        """Delete the job's chunk inputs wherever they live, and its isolation checkpoints."""
        chunks = int(self.redis.hget(keys.job(job_id), "chunks") or 0)
        self.inputs_of(job_id).drop(job_id, chunks)
        if chunks:
            self.redis.delete(*(keys.isolation(job_id, c) for c in range(chunks)))

    def list_jobs(self, limit: int = 20) -> list[JobStatus]:
        """The ``limit`` newest jobs; ids whose job is gone are pruned on the way."""
        out: list[JobStatus] = []
        start = 0
        while len(out) < limit:  # limit <= 0: nothing (zrevrange's stop of -1 = "all")
            ids: Any = self.redis.zrevrange(keys.JOBS, start, start + limit - 1)
            if not ids:
                break
            gone = []
            for raw in ids:
                try:
                    out.append(self.status(raw.decode()))
                except JobNotFound:
                    gone.append(raw.decode())
            start += len(ids) - self.prune(gone)
        return out[:limit]

    def prune(self, job_ids: Sequence[str]) -> int:
        """Drop from the index the ids whose job hash is gone (expired or deleted), with
        any key of theirs written after the job ended; how many were dropped."""
        return sum(int(self._prune(keys=[keys.JOBS, *keys.job_keys(job_id, 0)], args=[job_id]))
                   for job_id in job_ids)

    def delete_job(self, job_id: str, *, results: bool = False) -> bool:
        """Remove every key of the job's state and its index entry (with ``results``,
        its parts and documents held in Redis too); False if there was no such job."""
        self._locations.pop(job_id, None)  # a job created again under this id may differ
        chunks = int(self.redis.hget(keys.job(job_id), "chunks") or 0)
        doomed = keys.job_keys(job_id, chunks)
        if results:
            doomed += keys.result_keys(job_id, chunks)
        pipe = self.redis.pipeline()
        pipe.delete(*doomed)
        pipe.zrem(keys.JOBS, job_id)
        deleted, _ = pipe.execute()
        return bool(deleted)

    def started_chunks(self, job_id: str) -> set[int]:
        return {int(c) for c in self.redis.hkeys(keys.attempts(job_id))}

    def touch_chunk(self, job_id: str, chunk: int) -> bool:
        return bool(self.redis.hsetnx(keys.attempts(job_id), str(chunk), 0))
