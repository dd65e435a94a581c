"""How the command line shows things: tables for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from typing import Any

import click

from jobs import JobStatus
from jobs.progress import job_progress


def print_json(data: object, *, err: bool = False) -> None:
    """``data`` as indented JSON on stdout (stderr with ``err``)."""
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str), err=err)


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    for line in [headers, *rows]:
        click.echo("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


def duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def throughput(status: JobStatus) -> float:
    """Rows per second since the job went in progress (0 before)."""
    return job_progress(status, time.time()).rows_per_sec or 0.0


#: Shown for a rate or an ETA that is not known yet.
UNKNOWN = "—"


def status_dict(status: JobStatus) -> dict[str, Any]:
    pace = job_progress(status, time.time())
    return asdict(status) | {"rows_per_sec": pace.rows_per_sec or 0.0,
                             "request_counts": {"total": status.total,
                                                "completed": status.completed,
                                                "failed": status.failed},
                             "tokens": {"prompt": pace.prompt_tokens,
                                        "generated": pace.generated_tokens},
                             "tokens_per_sec": pace.tokens_per_sec,
                             "eta_seconds": pace.eta_seconds}


def _eta(status: JobStatus, seconds: float | None) -> str:
    if status.terminal:
        return f"{UNKNOWN} (ended)"
    return duration(seconds) if seconds is not None else UNKNOWN


def show_status(status: JobStatus) -> None:
    pace = job_progress(status, time.time())
    click.echo(f"job       {status.job_id}")
    click.echo(f"state     {status.state}" + (f"  ({status.error})" if status.error else ""))
    click.echo(f"rows      {status.done_rows:,}/{status.total:,} done: "
               f"{status.completed:,} completed, {status.failed:,} failed")
    click.echo(f"chunks    {status.chunks_done:,}/{status.chunks:,}")
    if status.alert:
        click.echo(f"alert     {status.alert}")
    click.echo(f"tokens    {pace.prompt_tokens:,} prompt, {pace.generated_tokens:,} generated"
               + (f"  ({pace.tokens_per_sec:,.1f} tokens/s)" if pace.tokens_per_sec else ""))
    click.echo("speed     " + (f"{pace.rows_per_sec:,.1f} rows/s" if pace.rows_per_sec
                               else UNKNOWN))
    click.echo(f"eta       {_eta(status, pace.eta_seconds)}")
    if status.metrics:
        rows = []
        for backend, m in sorted(status.metrics.items()):
            prefill = m.get("prompt_tokens", 0) / m["prefill_seconds"] \
                if m.get("prefill_seconds") else 0
            decode = m.get("generated_tokens", 0) / m["decode_seconds"] \
                if m.get("decode_seconds") else 0
            rows.append([backend, f"{int(m.get('rows', 0)):,}", f"{int(m.get('errors', 0)):,}",
                         f"{int(m.get('prompt_tokens', 0)):,}",
                         f"{int(m.get('generated_tokens', 0)):,}", f"{prefill:,.0f}",
                         f"{decode:,.0f}"])
        click.echo("")
        print_table(["BACKEND", "ROWS", "ERRORS", "PROMPT TOK", "GEN TOK", "PREFILL TOK/S",
                     "DECODE TOK/S"], rows)


class Progress:
    """One line of progress: rows done, rows/s, ETA, failures; redrawn on a terminal."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.started = time.monotonic()
        self.last_print = 0.0

    def __call__(self, status: JobStatus) -> None:
        elapsed = time.monotonic() - self.started
        rate = status.done_rows / elapsed if elapsed > 0 else 0.0
        left = status.total - status.done_rows
        eta = duration(left / rate) if rate and left else "-"
        line = (f"{status.done_rows:,}/{status.total:,} rows  {rate:,.1f} rows/s  ETA {eta}  "
                f"{status.failed:,} failed  [{status.state}]")
        if self.tty:
            click.echo(f"\r{line}\x1b[K", nl=status.terminal, err=True)
        elif status.terminal or time.monotonic() - self.last_print > 5:
            click.echo(line, err=True)
            self.last_print = time.monotonic()
