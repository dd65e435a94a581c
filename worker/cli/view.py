"""How the command line shows things: tables for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from typing import Any

import click

from jobs import JobStatus


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
    started = status.timestamps.get("in_progress_at")
    if not started or not status.done_rows:
        return 0.0
    ended = max((status.timestamps.get(f"{s}_at", 0.0) for s in
                 ("completed", "failed", "expired", "cancelled")), default=0.0)
    elapsed = (ended or time.time()) - started
    return status.done_rows / elapsed if elapsed > 0 else 0.0


def status_dict(status: JobStatus) -> dict[str, Any]:
    return asdict(status) | {"rows_per_sec": throughput(status),
                             "request_counts": {"total": status.total,
                                                "completed": status.completed,
                                                "failed": status.failed}}


def show_status(status: JobStatus) -> None:
    click.echo(f"job       {status.job_id}")
    click.echo(f"state     {status.state}" + (f"  ({status.error})" if status.error else ""))
    click.echo(f"rows      {status.done_rows:,}/{status.total:,} done: "
               f"{status.completed:,} completed, {status.failed:,} failed")
    click.echo(f"chunks    {status.chunks_done:,}/{status.chunks:,}")
    if status.alert:
        click.echo(f"alert     {status.alert}")
    rate = throughput(status)
    if rate:
        click.echo(f"speed     {rate:,.1f} rows/s")
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
