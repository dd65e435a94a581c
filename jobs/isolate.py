"""Finding the row that kills the engine.

A chunk whose worker died on it more than ``max_attempts`` times (a segfault, an
abort in the engine: nothing the task could catch; `jobs.failures` decides) is run
again in ranges of rows, with its progress checkpointed in the store before and after each range.
When the process dies again, the next delivery finds the range that was running,
halves it and goes on; a range of one row that crashes is that row, recorded as
an error row (``engine_crash``). Every other row still gets its result, and the
chunk ends as one part like any other.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from inference import GenerateMetrics, TextModel
from jobs.execute import ChunkContext, ChunkOutput, chunk_output, error_result_rows, execute_chunk
from jobs.failures import isolation_budget
from jobs.rows import InputRow
from jobs.schema import SUMMARY_METRICS, ResultRow
from jobs.spec import JobSpec
from jobs.store import JobStore

CRASH_CODE = "engine_crash"

__all__ = ["CRASH_CODE", "isolation_budget", "run_isolating"]  # the budget lives in failures


def run_isolating(model: TextModel, spec: JobSpec, rows: Sequence[InputRow],
                  ctx: ChunkContext, store: JobStore) -> ChunkOutput:
    """Run ``rows`` range by range, resuming from the store's checkpoint."""
    state = store.load_isolation(ctx.job_id, ctx.chunk) or {
        "pending": [[0, len(rows)]], "running": None, "rows": [], "crashed": [],
        "metrics": {}, "started": datetime.now(UTC).timestamp()}
    running = state["running"]
    if running is not None:  # the process died in this range on the last delivery
        low, high = running
        if high - low == 1:
            state["crashed"].append(low)
        else:
            middle = (low + high) // 2
            state["pending"][:0] = [[low, middle], [middle, high]]
        state["running"] = None
    while state["pending"]:
        low, high = state["pending"].pop(0)
        state["running"] = [low, high]
        store.save_isolation(ctx.job_id, ctx.chunk, state)
        output = execute_chunk(model, spec, rows[low:high], ctx)
        state["rows"].extend({k: v for k, v in row.items() if k != "completed_at"}
                             for row in output.results.to_pylist())
        _add_metrics(state["metrics"], output.summary.to_dict())
        state["running"] = None
        store.save_isolation(ctx.job_id, ctx.chunk, state)
    crashed = [rows[i] for i in state["crashed"]]
    message = ("the engine crashed on this row; it was isolated from the rest of its chunk "
               "and recorded as an error")
    out = [ResultRow.from_dict(row) for row in state["rows"]]
    out += error_result_rows(spec, crashed, ctx, CRASH_CODE, message)
    out.sort(key=lambda r: r.row_index)
    m = state["metrics"]
    totals = GenerateMetrics(prompt_tokens=int(m.get("prompt_tokens", 0)),
                             generated_tokens=int(m.get("generated_tokens", 0)),
                             prefill_seconds=m.get("prefill_seconds", 0.0),
                             decode_seconds=m.get("decode_seconds", 0.0),
                             total_seconds=m.get("total_seconds", 0.0))
    started = datetime.fromtimestamp(state["started"], UTC)
    return chunk_output(spec, ctx, out, totals, started)


def _add_metrics(into: dict[str, Any], summary: dict[str, Any]) -> None:
    for key in SUMMARY_METRICS:
        into[key] = into.get(key, 0) + summary[key]
