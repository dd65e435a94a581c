"""What every fault-injection test checks once the fault has played out.

`check_job` holds a job to the promise of the failure model: every input row ends as
exactly one result or error row, each chunk left one part under its own name and
nothing else (no temporary or stray files), Redis agrees with the Parquet on disk,
the job reached a terminal state, and no chunk was delivered more often than its
retries allow.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import redis

from jobs import keys
from jobs.redis_store import RedisJobStore
from jobs.store import JobStatus

PART = re.compile(r"^part-(\d{6})\.parquet$")


def part_files(results_dir: Path, kind: str, job_id: str) -> dict[int, Path]:
    """A job's parts of ``kind`` by chunk; fails on any other file in their folder."""
    folder = Path(results_dir) / kind / f"job={job_id}"
    if not folder.exists():
        return {}
    parts = {}
    for path in folder.iterdir():
        match = PART.match(path.name)
        assert match and path.is_file(), f"stray file in {folder}: {path.name}"
        parts[int(match.group(1))] = path
    return parts


def check_job(redis_url: str, results_dir: Path | str, job_id: str, input_ids: list[str], *,
              max_attempts: int, complete: bool = True) -> tuple[JobStatus, list[dict]]:
    """Assert the exactly-once invariants of a finished job; its status and result rows.

    ``complete=False`` is for a job that could not write its results at all (an
    unwritable results location): it must have failed, and every row it did write
    must still be counted once.
    """
    results_dir = Path(results_dir)
    store = RedisJobStore.from_url(redis_url)
    status = store.status(job_id)
    assert status.terminal, f"job {job_id} is still {status.state}"
    assert status.total == len(input_ids), (status.total, len(input_ids))

    parts = part_files(results_dir, "results", job_id)
    metrics = part_files(results_dir, "metrics", job_id)
    assert set(parts) <= set(range(status.chunks)), sorted(parts)
    assert set(metrics) <= set(parts), "a metrics part without its results part"
    jobs_dir = results_dir / "jobs" / job_id
    if jobs_dir.exists():
        leftovers = [p.name for p in jobs_dir.iterdir() if p.name.endswith(".tmp")]
        assert not leftovers, f"temporary documents left in {jobs_dir}: {leftovers}"

    rows: list[dict] = []
    for chunk, path in sorted(parts.items()):
        table = pq.read_table(path)
        assert set(table.column("chunk").to_pylist()) <= {chunk}, f"{path} holds other chunks"
        rows.extend(table.to_pylist())
    seen = Counter(r["custom_id"] for r in rows)
    duplicates = sorted(i for i, n in seen.items() if n > 1)
    assert not duplicates, f"rows written twice: {duplicates[:10]}"
    assert set(seen) <= set(input_ids), sorted(set(seen) - set(input_ids))[:10]
    if complete:
        missing = sorted(set(input_ids) - set(seen))
        assert not missing, f"input rows with no result or error row: {missing[:10]}"
        assert status.state != "cancelled" or status.chunks_done == status.chunks
        done = store.done_chunks(job_id)
        assert sorted(c for c, s in done.items() if s.status != "cancelled") == sorted(parts)
    else:
        assert status.state == "failed" and status.error, (status.state, status.error)

    errors = sum(r["error_code"] is not None for r in rows)
    assert (status.completed, status.failed) == (len(rows) - errors, errors), (
        f"Redis counts completed={status.completed} failed={status.failed}; the Parquet "
        f"holds {len(rows) - errors} results and {errors} error rows")

    client = redis.Redis.from_url(redis_url)
    try:
        attempts = {int(k): int(v) for k, v in client.hgetall(keys.attempts(job_id)).items()}
    finally:
        client.close()
    over = {c: n for c, n in attempts.items() if n > max_attempts + 1}
    assert not over, f"chunks delivered more than {max_attempts} + 1 times: {over}"
    return status, sorted(rows, key=lambda r: r["row_index"])
