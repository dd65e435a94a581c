"""Every Redis key inferq uses, in one place: the whole footprint on one screen.

    inferq:jobs                              zset   job id -> created_at (recent jobs)
    inferq:job:<id>                          hash   state, <state>_at timestamps, total,
                                                    completed, failed, chunks, spec, error,
                                                    inputs (where chunk inputs live, unless
                                                    in Redis: jobs/inputs.py)
    inferq:job:<id>:done                     hash   chunk -> summary JSON (set membership:
                                                    the first completion wins)
    inferq:job:<id>:attempts                 hash   chunk -> deliveries started
    inferq:job:<id>:input:<chunk>            string the chunk's input rows (zlib JSON), for
                                                    jobs whose inputs are in Redis
    inferq:job:<id>:part:<kind>:<chunk>      string a Parquet part in flight (Redis-only results)
    inferq:job:<id>:doc:<name>               string a job document in flight (spec.json,
                                                    manifest.json; Redis-only results)
    inferq:job:<id>:metrics                  hash   "<backend>|<field>" -> running totals
    inferq:job:<id>:stream                   stream result rows for live readers: an entry
                                                    a chunk, JSON lines (capped near 10,000 rows)
    inferq:job:<id>:cancel                   string present = cancel requested
    inferq:job:<id>:finalize                 string finalize lock (first finisher wins)
    inferq:job:<id>:isolate:<chunk>          string checkpoint of a chunk run row range by
                                                    range after crashing its worker

Once a job ends (completed, failed, expired, cancelled) every ``inferq:job:<id>`` key
but its parts and documents in flight expires after the job's retention (the hash's
``retention`` field, seconds; 0 = kept), and its id leaves ``inferq:jobs`` when the
job's store next meets it gone; `job_keys` lists them, `result_keys` the others.

    inferq:workers                           zset   worker name -> last heartbeat
    inferq:worker:<name>                     string advertisement JSON, expires with its TTL
    inferq:totals                            hash   "<model>|<backend>|<field>" -> running totals
                                                    of every chunk recorded (the exporters'
                                                    counters; kept when jobs expire)
    inferq:eval:suites                       set    suites that have run
    inferq:eval:<suite>:latest               hash   target -> the latest run's summary JSON
    inferq:eval:<suite>:history:<target>     list   run summaries, newest first (bounded)
    inferq:eval:slot:<suite>:<slot>          string a schedule slot claimed (one run per slot)
    inferq:alerts                            stream breached thresholds, for watchers (capped)
    inferq:batches:validating                zset   job id -> lease end: batches `inferq serve`
                                                    is validating (a stale lease is resumed)
    inferq:batch:<id>                        hash   such a batch's create request (JSON) and
                                                    cancelling_at, until its job exists
    inferq:feed:queues                       set    queues the feeder serves (jobs/feeder.py)
    inferq:feed:q:<queue>:waiting            zset   job id -> (priority band, turn): jobs with
                                                    chunks not yet fed to <queue>
    inferq:feed:q:<queue>:inflight           zset   "<job id> <chunk>" -> fed at: fed, not settled
    inferq:feed:q:<queue>:sending            zset   "<job id> <chunk>" -> claimed at: claimed,
                                                    not yet known to be on the Celery queue
    inferq:feed:turns                        string counter: round-robin turns
    inferq:feed:depth                        hash   queue -> chunks to keep fed (set by the lead)
    inferq:feed:job:<id>                     hash   queue, next (cursor), priority, inflight,
                                                    and the job's own key names
    inferq:feed:dropped                      set    cancelled jobs whose unfed chunks are to
                                                    be recorded cancelled
    inferq:feed:lease                        string the feeder's periodic pass: its holder
                                                    (expires: another process takes over)
"""

from __future__ import annotations

from jobs import layout

PREFIX = "inferq"

JOBS = f"{PREFIX}:jobs"
WORKERS = f"{PREFIX}:workers"
TOTALS = f"{PREFIX}:totals"


def job(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


def done(job_id: str) -> str:
    return f"{job(job_id)}:done"


def attempts(job_id: str) -> str:
    return f"{job(job_id)}:attempts"


def chunk_input(job_id: str, chunk: int) -> str:
    return f"{job(job_id)}:input:{chunk}"


def part(job_id: str, kind: str, chunk: int) -> str:
    return f"{job(job_id)}:part:{kind}:{chunk}"


def document(job_id: str, name: str) -> str:
    return f"{job(job_id)}:doc:{name}"


def isolation(job_id: str, chunk: int) -> str:
    return f"{job(job_id)}:isolate:{chunk}"


def metrics(job_id: str) -> str:
    return f"{job(job_id)}:metrics"


def stream(job_id: str) -> str:
    return f"{job(job_id)}:stream"


def cancel(job_id: str) -> str:
    return f"{job(job_id)}:cancel"


def finalize(job_id: str) -> str:
    return f"{job(job_id)}:finalize"


def worker(name: str) -> str:
    return f"{PREFIX}:worker:{name}"


EVAL_SUITES = f"{PREFIX}:eval:suites"
VALIDATING_BATCHES = f"{PREFIX}:batches:validating"


def pending_batch(job_id: str) -> str:
    return f"{PREFIX}:batch:{job_id}"

ALERTS = f"{PREFIX}:alerts"

FEED_QUEUES = f"{PREFIX}:feed:queues"
FEED_TURNS = f"{PREFIX}:feed:turns"
FEED_DEPTH = f"{PREFIX}:feed:depth"
FEED_DROPPED = f"{PREFIX}:feed:dropped"
FEED_LEASE = f"{PREFIX}:feed:lease"
#: `feed_job` is this prefix and the job id (the feeder's Lua builds it from a member).
FEED_JOB_PREFIX = f"{PREFIX}:feed:job:"


def feed_job(job_id: str) -> str:
    return f"{FEED_JOB_PREFIX}{job_id}"


def feed_waiting(queue: str) -> str:
    return f"{PREFIX}:feed:q:{queue}:waiting"


def feed_inflight(queue: str) -> str:
    return f"{PREFIX}:feed:q:{queue}:inflight"


def feed_sending(queue: str) -> str:
    return f"{PREFIX}:feed:q:{queue}:sending"


def eval_latest(suite: str) -> str:
    return f"{PREFIX}:eval:{suite}:latest"


def eval_history(suite: str, target: str) -> str:
    return f"{PREFIX}:eval:{suite}:history:{target}"


def eval_requests(kind: str) -> str:
    """job id -> a run's request for a follow-up job of ``kind`` (confirm, judge), JSON."""
    return f"{PREFIX}:eval:requests:{kind}"


def eval_slot(suite: str, slot: int) -> str:
    return f"{PREFIX}:eval:slot:{suite}:{slot}"


def job_keys(job_id: str, chunks: int) -> list[str]:
    """Every key of one job's state (the hash first), for a job of ``chunks`` chunks:
    what retention expires and `inferq delete` removes."""
    return [job(job_id), done(job_id), attempts(job_id), metrics(job_id), stream(job_id),
            cancel(job_id), finalize(job_id),
            *(chunk_input(job_id, c) for c in range(chunks)),
            *(isolation(job_id, c) for c in range(chunks))]


def result_keys(job_id: str, chunks: int) -> list[str]:
    """One job's parts and documents in flight (results through Redis): results, so
    kept until collected or deleted with ``inferq delete --files``."""
    return [*(part(job_id, kind, c) for c in range(chunks) for kind in layout.KINDS),
            *(document(job_id, name) for name in layout.DOCUMENTS)]


def job_pattern(job_id: str) -> str:
    """Matches every key of one job (for deletion)."""
    return f"{job(job_id)}*"
