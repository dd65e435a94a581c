"""The feeder: chunks reach the Celery queues a few at a time, fairly across jobs.

Enqueuing every chunk at submit would make a 200-row evaluation submitted after a
million-row job wait for all of it (a Celery queue is first in, first out). Instead
a job is *added* to the feeder (its queue, its priority, a cursor at its first
chunk), and the feeder keeps each queue's chunks *in flight* (fed and not yet
settled: on the Celery queue or running) near a depth target: the lead's pass sets
it to ``feed_depth`` per live worker process consuming the queue, ``feed_depth``
while none is seen. Each chunk fed goes to the waiting job of the highest priority
that has the fewest chunks in flight, ties broken round-robin (the job fed longest
ago first); so a job submitted behind a big one is fed at the next chunk to end,
and two jobs of one priority share the queue chunk for chunk.

Who feeds: `submit` feeds the first window itself; a worker that ends a chunk
settles it and tops its queue up (`Feeder.after_chunk`); a periodic pass under a
lease (`Feeder.tick`, run by the worker that holds ``inferq:feed:lease``) sets the
depth targets, feeds every queue (a new worker, a job that found the queue full),
resends what a feeder killed between claiming and sending left behind, settles what
a worker killed between recording and settling left behind, and drops cancelled jobs.

Exactly once: one Lua script claims a chunk and advances the job's cursor together,
so two feeders never claim one chunk and none is skipped; the claim is kept in a
*sending* set until the message is known to be on its queue, and the pass resends a
claim older than ``grace`` seconds. A resend may duplicate a message, which is
harmless: a worker skips a chunk that is recorded, and the first part published
wins (`jobs.runner`). The cursor skips chunks recorded already (`reconcile`, which
rewinds it, re-feeds only what is missing).

Cancel and expiry: the claim script never feeds a job whose cancel is requested or
that has ended (or is gone), and drops it from its queue; a cancelled job's unfed
chunks are then recorded ``cancelled`` (`jobs.lifecycle.record_chunk`, first record
wins) so the job still finalizes. An expired job ends by the expiry sweep's records.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from jobs import keys
from jobs.errors import JobNotFound
from jobs.lifecycle import TERMINAL, ChunkStatus, ChunkSummary, record_chunk
from jobs.spec import MAX_PRIORITY

if TYPE_CHECKING:  # the command line must not load redis for `inferq run`
    import redis

    from jobs.sinks import PartSink
    from jobs.store import JobStore

log = logging.getLogger("jobs.feeder")

#: (queue, job id, chunk) -> None: puts one chunk message on the queue.
Send = Callable[[str, str, int], None]

#: Chunks fed per worker process consuming a queue (``INFERQ_FEED_DEPTH``).
DEFAULT_DEPTH = 2
#: A priority band in a waiting zset's score: (MAX_PRIORITY - priority) * BAND + turn.
BAND = 2**40
#: Waiting jobs the claim script looks at per pick (the highest band's first ones).
SCAN = 200

_ADD = """
local fk = KEYS[1]
local first = tonumber(ARGV[4])
if redis.call('EXISTS', fk) == 1 then
  local nxt = tonumber(redis.call('HGET', fk, 'next'))
  if first < nxt then redis.call('HSET', fk, 'next', first) end
else
  redis.call('HSET', fk, 'queue', ARGV[2], 'base', ARGV[3], 'next', first, 'inflight', 0,
             'job_key', ARGV[5], 'done_key', ARGV[6], 'cancel_key', ARGV[7])
end
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  local base = tonumber(redis.call('HGET', fk, 'base'))
  redis.call('ZADD', KEYS[2], base + redis.call('INCR', KEYS[4]), ARGV[1])
end
redis.call('SADD', KEYS[3], ARGV[2])
return 1
"""

# A fed chunk handled: it no longer counts in flight (its job's feed hash dropped once
# nothing of it is in flight, waiting or to be recorded cancelled). 1 if it was in flight.
_SETTLE_FN = """
local function settle(fk, inflight, sending, waiting, dropped, job, member)
  if redis.call('EXISTS', fk) == 0 then return 0 end
  redis.call('ZREM', sending, member)
  if redis.call('ZREM', inflight, member) == 0 then return 0 end
  local n = redis.call('HINCRBY', fk, 'inflight', -1)
  if n <= 0 and not redis.call('ZSCORE', waiting, job)
      and redis.call('SISMEMBER', dropped, job) == 0 then
    redis.call('DEL', fk)
  end
  return 1
end
"""

# KEYS waiting, inflight, sending, turns, dropped, depth; ARGV queue, depth, now, feed job
# prefix, limit, band, scan, the terminal states comma-separated.
_CLAIM = """
local depth = tonumber(redis.call('HGET', KEYS[6], ARGV[1]) or ARGV[2])
local limit, band_size = tonumber(ARGV[5]), tonumber(ARGV[6])
local terminal = {}
for state in string.gmatch(ARGV[8], '[^,]+') do terminal[state] = true end
local claimed = {}
local function drop(job, fk, cancelled)
  redis.call('ZREM', KEYS[1], job)
  if cancelled then redis.call('SADD', KEYS[5], job)
  elseif tonumber(redis.call('HGET', fk, 'inflight') or '0') <= 0 then redis.call('DEL', fk)
  end
end
while #claimed < 2 * limit and redis.call('ZCARD', KEYS[2]) < depth do
  local jobs = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[7]) - 1, 'WITHSCORES')
  if #jobs == 0 then break end
  local band = math.floor(tonumber(jobs[2]) / band_size)
  local best, best_n, best_fk
  for i = 1, #jobs, 2 do
    if math.floor(tonumber(jobs[i + 1]) / band_size) ~= band then break end
    local fk = ARGV[4] .. jobs[i]
    local n = tonumber(redis.call('HGET', fk, 'inflight') or '0')
    if best == nil or n < best_n then best, best_n, best_fk = jobs[i], n, fk end
  end
  local f = redis.call('HMGET', best_fk, 'job_key', 'done_key', 'cancel_key', 'next', 'base')
  local state = f[1] and redis.call('HGET', f[1], 'state')
  if not state or terminal[state] then
    drop(best, best_fk, false)
  elseif redis.call('EXISTS', f[3]) == 1 then
    drop(best, best_fk, true)
  else
    local chunks = tonumber(redis.call('HGET', f[1], 'chunks') or '0')
    local nxt = tonumber(f[4])
    while nxt < chunks and redis.call('HEXISTS', f[2], tostring(nxt)) == 1 do nxt = nxt + 1 end
    if nxt < chunks then
      local member = best .. ' ' .. nxt
      if redis.call('ZADD', KEYS[2], ARGV[3], member) == 1 then
        redis.call('HINCRBY', best_fk, 'inflight', 1)
      end
      redis.call('ZADD', KEYS[3], ARGV[3], member)
      table.insert(claimed, best)
      table.insert(claimed, nxt)
      nxt = nxt + 1
    end
    redis.call('HSET', best_fk, 'next', nxt)
    if nxt < chunks then
      redis.call('ZADD', KEYS[1], tonumber(f[5]) + redis.call('INCR', KEYS[4]), best)
    else
      drop(best, best_fk, false)
    end
  end
end
return claimed
"""

_DROP = """
redis.call('ZREM', KEYS[1], ARGV[1])
if ARGV[2] == '1' then return redis.call('SADD', KEYS[2], ARGV[1]) end
if tonumber(redis.call('HGET', KEYS[3], 'inflight') or '0') <= 0 then redis.call('DEL', KEYS[3]) end
return 1
"""

_SETTLE = _SETTLE_FN + """
return settle(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[2])
"""

# A worker's top-up in one round trip: settle its chunk (KEYS[7] its job's feed hash,
# ARGV[9] the job, ARGV[10] the member), then `_CLAIM` on the same queue.
_SETTLE_CLAIM = _SETTLE_FN + """
settle(KEYS[7], KEYS[2], KEYS[3], KEYS[1], KEYS[5], ARGV[9], ARGV[10])
""" + _CLAIM

_FORGET_QUEUE = """
if redis.call('ZCARD', KEYS[2]) + redis.call('ZCARD', KEYS[3]) + redis.call('ZCARD', KEYS[4])
    == 0 then
  return redis.call('SREM', KEYS[1], ARGV[1])
end
return 0
"""


def _band_base(priority: int) -> int:
    return (MAX_PRIORITY - priority) * BAND


def _member(job_id: str, chunk: int) -> str:
    return f"{job_id} {chunk}"


def _parse(member: bytes | str) -> tuple[str, int]:
    text = member.decode() if isinstance(member, bytes) else member
    job_id, _, chunk = text.rpartition(" ")
    return job_id, int(chunk)


class Feeder:
    """Feeds chunks of the jobs added to it to their queues; see the module docstring.

    ``depth`` is the chunks kept in flight on a queue whose target the lead has not
    set (no live consumer seen); ``grace`` the seconds after which a claim not known
    sent is resent, and a settled-looking chunk still counted in flight is settled.
    """

    def __init__(self, client: redis.Redis, *, depth: int = DEFAULT_DEPTH,
                 grace: float = 30.0) -> None:
        if depth < 1:
            raise ValueError(f"feed depth={depth!r} must be at least 1")
        self.redis, self.depth, self.grace = client, depth, grace
        self._add = client.register_script(_ADD)
        self._claim = client.register_script(_CLAIM)
        self._settle = client.register_script(_SETTLE)
        self._settle_claim = client.register_script(_SETTLE_CLAIM)
        #: job id -> its queue (a job's queue never changes): a top-up asks Redis once.
        self._queues: dict[str, str] = {}
        self._drop = client.register_script(_DROP)
        self._forget = client.register_script(_FORGET_QUEUE)

    # -- adding jobs -----------------------------------------------------------------

    def add(self, job_id: str, queue: str, priority: int = 0, *, first: int = 0) -> None:
        """Make the job's chunks from ``first`` on feedable to ``queue`` (adding the job,
        or moving its cursor back to ``first``: chunks recorded since are skipped)."""
        self._add(keys=[keys.feed_job(job_id), keys.feed_waiting(queue), keys.FEED_QUEUES,
                        keys.FEED_TURNS],
                  args=[job_id, queue, _band_base(priority), first, keys.job(job_id),
                        keys.done(job_id), keys.cancel(job_id)])

    def enqueue_for(self, queue: str, priority: int = 0) -> Callable[[str, int], None]:
        """A `jobs.submit.Enqueue` that adds chunks to the feeder instead of sending them:
        one `add` per job and lowest chunk (submit and reconcile call it per chunk)."""
        lowest: dict[str, int] = {}

        def enqueue(job_id: str, chunk: int) -> None:
            if lowest.get(job_id, chunk + 1) > chunk:
                self.add(job_id, queue, priority, first=chunk)
                lowest[job_id] = chunk
        return enqueue

    # -- feeding ---------------------------------------------------------------------

    def claim(self, queue: str, limit: int = 1000,
              settling: tuple[str, int] | None = None) -> list[tuple[str, int]]:
        """Claim up to ``limit`` chunks for ``queue`` within its depth, atomically with
        their jobs' cursors; each must then be sent and `confirm`-ed. ``settling``: a
        (job id, chunk) of this queue to `settle` first, in the same script."""
        queue_keys = [keys.feed_waiting(queue), keys.feed_inflight(queue),
                      keys.feed_sending(queue), keys.FEED_TURNS, keys.FEED_DROPPED,
                      keys.FEED_DEPTH]
        args: list[Any] = [queue, self.depth, time.time(), keys.FEED_JOB_PREFIX, limit, BAND,
                           SCAN, ",".join(TERMINAL)]
        if settling is None:
            flat: Any = self._claim(keys=queue_keys, args=args)
        else:
            job_id, chunk = settling
            flat = self._settle_claim(keys=[*queue_keys, keys.feed_job(job_id)],
                                      args=[*args, job_id, _member(job_id, chunk)])
        return [(flat[i].decode(), int(flat[i + 1])) for i in range(0, len(flat), 2)]

    def confirm(self, queue: str, claims: list[tuple[str, int]]) -> None:
        """The claimed chunks' messages are on their queue: no resend needed."""
        if claims:
            self.redis.zrem(keys.feed_sending(queue), *(_member(j, c) for j, c in claims))

    def feed(self, queue: str, send: Send,
             settling: tuple[str, int] | None = None) -> list[tuple[str, int]]:
        """Top ``queue`` up to its depth: claim, send, confirm; the chunks fed.
        ``settling``: a chunk of this queue to settle first (`claim`)."""
        claims = self.claim(queue, settling=settling)
        for job_id, chunk in claims:
            send(queue, job_id, chunk)
        self.confirm(queue, claims)
        return claims

    def settle(self, job_id: str, chunk: int) -> str | None:
        """A fed chunk's message has been handled (recorded, or its job is gone): it no
        longer counts in flight. Its queue, or None if the feeder did not know the job."""
        raw = self.redis.hget(keys.feed_job(job_id), "queue")
        if not isinstance(raw, bytes):
            return None
        queue = raw.decode()
        self._settle(keys=[keys.feed_job(job_id), keys.feed_inflight(queue),
                           keys.feed_sending(queue), keys.feed_waiting(queue),
                           keys.FEED_DROPPED], args=[job_id, _member(job_id, chunk)])
        return queue

    def after_chunk(self, job_id: str, chunk: int, send: Send) -> list[tuple[str, int]]:
        """What a worker does when a chunk's delivery ends: settle it, top its queue up
        (one script, the job's queue remembered: two round trips a chunk and the sends)."""
        queue = self._queues.get(job_id)
        if queue is None:
            raw = self.redis.hget(keys.feed_job(job_id), "queue")
            if not isinstance(raw, bytes):
                return []  # the feeder does not know the job (ended, or never fed)
            if len(self._queues) >= 1024:  # a worker lives long: keep the recent ones
                self._queues.clear()
            queue = self._queues[job_id] = raw.decode()
        return self.feed(queue, send, settling=(job_id, chunk))

    # -- the periodic pass (one process at a time, under the lease) -----------------

    def queues(self) -> list[str]:
        """The queues with feeder state."""
        members: Any = self.redis.smembers(keys.FEED_QUEUES)
        return sorted(m.decode() for m in members)

    def set_depths(self, depths: dict[str, int]) -> None:
        """Each queue's depth target (those not named fall back to ``depth``)."""
        pipe = self.redis.pipeline()
        pipe.delete(keys.FEED_DEPTH)
        if depths:
            pipe.hset(keys.FEED_DEPTH, mapping={q: max(1, d) for q, d in depths.items()})
        pipe.execute()

    def tick(self, send: Send, store: JobStore, sink: PartSink,
             now: float | None = None) -> dict[str, int]:
        """One pass: drop ended and cancelled jobs, record cancelled ones' unfed chunks,
        recover lost claims and settles, feed every queue. Counts of what it did."""
        now = time.time() if now is None else now
        done = {"dropped": 0, "cancelled_chunks": 0, "resent": 0, "settled": 0, "fed": 0}
        for queue in self.queues():
            done["dropped"] += self._drop_stopped(queue)
            done["resent"] += self._resend(queue, send, now)
            done["settled"] += self._settle_stale(queue, now)
        done["cancelled_chunks"] += self.record_dropped(store, sink)
        for queue in self.queues():
            done["fed"] += len(self.feed(queue, send))
            self._forget(keys=[keys.FEED_QUEUES, keys.feed_waiting(queue),
                               keys.feed_inflight(queue), keys.feed_sending(queue)],
                         args=[queue])
        return done

    def record_dropped(self, store: JobStore, sink: PartSink) -> int:
        """Record the unfed chunks of each dropped (cancelled) job ``cancelled``, so the
        job finalizes; the chunks recorded."""
        members: Any = self.redis.smembers(keys.FEED_DROPPED)
        recorded = 0
        for job_id in sorted(m.decode() for m in members):
            raw: Any = self.redis.hget(keys.feed_job(job_id), "next")
            first = int(raw) if raw is not None else 0
            try:
                status = store.status(job_id)
                if not status.terminal:
                    done = store.done_chunks(job_id)
                    for chunk in range(first, status.chunks):
                        if chunk not in done and record_chunk(
                                store, sink, job_id, chunk, ChunkSummary(
                                    rows=0, errors=0, status=ChunkStatus.CANCELLED,
                                    reason="cancelled before it was fed")) is not None:
                            recorded += 1
            except JobNotFound:
                pass  # deleted meanwhile: nothing left to record
            pipe = self.redis.pipeline()
            pipe.srem(keys.FEED_DROPPED, job_id)
            pipe.hget(keys.feed_job(job_id), "inflight")
            _, inflight = pipe.execute()
            if int(inflight or 0) <= 0:
                self.redis.delete(keys.feed_job(job_id))
        return recorded

    def _drop_stopped(self, queue: str) -> int:
        """Drop the waiting jobs that ended, vanished or were cancelled (the claim script
        drops only those it reaches; a full queue of a higher band may never reach them)."""
        members: Any = self.redis.zrange(keys.feed_waiting(queue), 0, -1)
        ids = [m.decode() for m in members]
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(keys.job(job_id), "state")
            pipe.exists(keys.cancel(job_id))
        found = pipe.execute()
        dropped = 0
        for i, job_id in enumerate(ids):
            state, cancelled = found[2 * i], found[2 * i + 1]
            ended = state is None or state.decode() in TERMINAL
            if ended or cancelled:
                self._drop(keys=[keys.feed_waiting(queue), keys.FEED_DROPPED,
                                 keys.feed_job(job_id)],
                           args=[job_id, "0" if ended else "1"])
                dropped += 1
        return dropped

    def _resend(self, queue: str, send: Send, now: float) -> int:
        """Resend the claims older than ``grace`` not known sent (their feeder died
        between claiming and sending); a duplicate is harmless."""
        stale: Any = self.redis.zrangebyscore(keys.feed_sending(queue), "-inf", now - self.grace)
        resent = []
        for member in stale:
            job_id, chunk = _parse(member)
            if self.redis.zscore(keys.feed_inflight(queue), member) is not None:
                send(queue, job_id, chunk)
                resent.append((job_id, chunk))
                log.warning("chunk %s of %s was claimed %.0fs ago and never sent: resent",
                            chunk, job_id, self.grace)
            self.redis.zrem(keys.feed_sending(queue), member)
        return len(resent)

    def _settle_stale(self, queue: str, now: float) -> int:
        """Settle the chunks in flight for over ``grace`` whose chunk is recorded or whose
        job ended or is gone (their worker died between recording and settling)."""
        old: Any = self.redis.zrangebyscore(keys.feed_inflight(queue), "-inf", now - self.grace)
        chunks = [_parse(m) for m in old]
        pipe = self.redis.pipeline(transaction=False)
        for job_id, chunk in chunks:
            pipe.hexists(keys.done(job_id), str(chunk))
            pipe.hget(keys.job(job_id), "state")
        found = pipe.execute()
        settled = 0
        for i, (job_id, chunk) in enumerate(chunks):
            recorded, state = found[2 * i], found[2 * i + 1]
            if recorded or state is None or state.decode() in TERMINAL:
                settled += self.settle(job_id, chunk) is not None
        return settled


def waiting(client: redis.Redis, queue: str) -> int:
    """Chunks of ``queue``'s waiting jobs not yet fed (a gauge for exporters)."""
    members: Any = client.zrange(keys.feed_waiting(queue), 0, -1)
    ids = [m.decode() for m in members]
    pipe = client.pipeline(transaction=False)
    for job_id in ids:
        pipe.hget(keys.feed_job(job_id), "next")
        pipe.hget(keys.job(job_id), "chunks")
    found = pipe.execute()
    return sum(max(0, int(found[2 * i + 1] or 0) - int(found[2 * i] or 0))
               for i in range(len(ids)))
