"""Job commands: submit, run, status, jobs, cancel, results, tail, reconcile, delete."""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from typing import Any

import click

import inference
from jobs import (
    TERMINAL,
    JobError,
    JobNotFound,
    ParquetSink,
    keys,
    layout,
    reconcile_job,
    spec_from_document,
)
from worker.cli.context import check_job_id, client_of, fail, settings_of, stdout_closed
from worker.cli.options import build_mapping, build_spec, job_options, with_mapping
from worker.cli.stdio import STDIN, input_path
from worker.cli.view import Progress, print_json, print_table, show_status, status_dict
from worker.export import EXPORT_FORMATS, REFUSED_DOCUMENT, export_format, export_results, is_chat
from worker.routing import queue_for


@click.command()
@job_options
@click.option("--wait", is_flag=True, help="Show progress until the job ends.")
@click.option("--queue-anyway", is_flag=True, help="Queue even if no live worker serves it.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def submit(ctx: click.Context, /, wait: bool, queue_anyway: bool, as_json: bool,
           **kw: Any) -> None:
    """Submit a classify or generate job over INPUT (JSONL, CSV, Parquet or text; - reads
    standard input)."""
    from worker.client import NoWorkerForJob  # on use: Celery (start-up time)

    client = client_of(ctx)
    try:
        mapping = build_mapping(kw)
        spec = with_mapping(build_spec(kw), mapping)
        with input_path(kw["input"], kw["fmt"], client.settings) as (path, fmt):
            status = client.submit(spec, path, fmt=fmt, queue_anyway=queue_anyway,
                                   mapping=mapping, keep_path=kw["input"] != STDIN)
    except NoWorkerForJob as exc:
        fail(str(exc), 2)
    except JobError as exc:
        fail(str(exc), 2)
    if not as_json:
        click.echo(status.job_id)
    elif not wait:  # with --wait, the final status is the one JSON document
        print_json(status_dict(status))
    if wait:
        final = client.wait(status.job_id, on_progress=Progress())
        if as_json:
            print_json(status_dict(final))
        sys.exit(0 if final.state == "completed" else 1)


@click.command()
@job_options
@click.option("--model-path", default=None,
              help="Load this GGUF file or MLX directory as the model (no catalog needed).")
@click.option("--model-root", multiple=True, help="Find the model id under this root.")
@click.option("--to", "dest", default=None,
              help="Then write every row to FILE (.jsonl, .csv, .parquet) or - (stdout).")
@click.option("--openai", is_flag=True,
              help="With --to: the OpenAI Batch output lines (successful rows).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def run(ctx: click.Context, /, model_path: str | None, model_root: tuple[str, ...],
        dest: str | None, openai: bool, as_json: bool, **kw: Any) -> None:
    """Run a job in this process, without Redis or Celery: same files on disk; --to
    writes its rows out (vLLM's run-batch -i IN -o OUT in one command)."""
    from worker.embedded import run_embedded  # on use: the worker runtime (start-up time)

    settings = settings_of(ctx, broker=False)
    out_fmt = _export_format(dest, None, openai)
    try:
        mapping = build_mapping(kw)
        spec = with_mapping(build_spec(kw), mapping)
        with input_path(kw["input"], kw["fmt"], settings) as (path, fmt):
            status = run_embedded(settings, spec, path, fmt=fmt, model_path=model_path,
                                  model_roots=model_root, mapping=mapping,
                                  keep_path=kw["input"] != STDIN, on_progress=Progress())
    except (JobError, inference.InferenceError) as exc:
        fail(str(exc), 2)
    if dest is not None and out_fmt is not None:
        sink = ParquetSink(settings.results_root() if not settings.results_via_redis
                           else "results")
        _export(sink, spec.job_id, dest, out_fmt, openai=openai, errors=False,
                chat=openai and is_chat(spec.metadata))
    summary = (f"{status.job_id} {status.state}: {status.completed:,} completed, "
               f"{status.failed:,} failed; results in {settings.results_root()}")
    if as_json:
        print_json(status_dict(status), err=dest == STDIN)
    else:
        click.echo(summary, err=dest == STDIN)
    sys.exit(0 if status.state == "completed" else 1)


@click.command()
@click.argument("job_id", callback=check_job_id)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def status(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """A job's state, counts, throughput and per-backend metrics."""
    client = client_of(ctx)
    try:
        current = client.store.status(job_id)
    except JobNotFound as exc:
        fail(str(exc), 2)
    if as_json:
        print_json(status_dict(current))
    else:
        show_status(current)


@click.command()
@click.option("--limit", default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def jobs(ctx: click.Context, limit: int, as_json: bool) -> None:
    """Recent jobs, newest first."""
    found = client_of(ctx).store.list_jobs(limit)
    if as_json:
        print_json([status_dict(s) for s in found])
        return
    print_table(["JOB", "STATE", "ROWS", "DONE", "FAILED", "CREATED"],
                [[s.job_id, s.state, f"{s.total:,}", f"{s.done_rows:,}", f"{s.failed:,}",
                  time.strftime("%Y-%m-%d %H:%M:%S",
                                time.localtime(s.timestamps.get("validating_at", 0)))]
                 for s in found])


@click.command()
@click.argument("job_id", callback=check_job_id)
@click.pass_context
def cancel(ctx: click.Context, job_id: str) -> None:
    """Cancel a job: running chunks stop at their next batch; finished rows stay."""
    try:
        current = client_of(ctx).cancel(job_id)
    except JobNotFound as exc:
        fail(str(exc), 2)
    click.echo(f"{job_id} {current.state}")


@click.command()
@click.argument("job_id", callback=check_job_id)
@click.option("--head", "head", type=int, default=10, show_default=True,
              help="Rows to show when not writing a file.")
@click.option("--to", "dest", default=None,
              help="Write every row to FILE (.jsonl, .csv or .parquet) or - (stdout).")
@click.option("--format", "out_fmt", type=click.Choice(EXPORT_FORMATS), default=None,
              help="Export format (default: from the --to file name; jsonl for -).")
@click.option("--openai", is_flag=True,
              help="With --to: the OpenAI Batch output format (and --errors its error file).")
@click.option("--errors", "errors_only", is_flag=True, help="Only the error rows.")
@click.pass_context
def results(ctx: click.Context, job_id: str, head: int, dest: str | None,
            out_fmt: str | None, openai: bool, errors_only: bool) -> None:
    """Show or export a job's result rows."""
    if openai and not dest:
        fail("--openai writes JSON lines: use it with --to FILE.jsonl (or --to -)", 2)
    fmt = _export_format(dest, out_fmt, openai)
    client = client_of(ctx)
    client.collect(job_id)
    if dest is not None and fmt is not None:
        try:
            chat = openai and is_chat(client.store.get_spec(job_id).metadata)
        except JobNotFound:  # Redis forgot it: its rows are still on disk
            chat = False
        _export(client.sink, job_id, dest, fmt, openai=openai, errors=errors_only, chat=chat,
                known=lambda: client.store.status(job_id))
        return
    table = _rows(client.sink, job_id, errors_only, lambda: client.store.status(job_id))
    rows = table.slice(0, head).to_pylist()
    print_table(["ROW", "CUSTOM_ID", "LABEL/TEXT", "ERROR"],
                [[str(r["row_index"]), r["custom_id"],
                  (r["label"] or r["text"] or "")[:50].replace("\n", " "),
                  r["error_code"] or ""] for r in rows])
    click.echo(f"({table.num_rows:,} rows; --to FILE writes them all)")


def _export_format(dest: str | None, fmt: str | None, openai: bool) -> str | None:
    """The export format of ``--to``/``--format`` (None without ``--to``); exits 2 on a
    name that says no format, or ``--openai`` with a format that is not JSON lines."""
    if dest is None:
        if fmt is not None:
            fail("--format chooses the export format: use it with --to FILE (or --to -)", 2)
        return None
    try:
        chosen = export_format(dest, fmt)
    except ValueError as exc:
        fail(str(exc), 2)
    if openai and chosen != "jsonl":
        fail(f"--openai writes JSON lines, not {chosen}: use --to FILE.jsonl (or --to -)", 2)
    return chosen


def _rows(sink: Any, job_id: str, errors_only: bool, known: Any) -> Any:
    """A job's result rows (only its error rows with ``errors_only``); exits 2 for a job
    that has no rows and that Redis does not know."""
    table = sink.read_results(job_id)
    if not table.num_rows:
        try:  # no rows yet, or a mistyped id: say which
            known()
        except JobNotFound as exc:
            fail(str(exc), 2)
    if errors_only:
        table = table.filter(table.column("error_code").is_valid())
    return table


def _export(sink: Any, job_id: str, dest: str, fmt: str, *, openai: bool, errors: bool,
            chat: bool, known: Any = lambda: None) -> None:
    """Write the job's rows to ``dest`` (- = stdout) and say how many (on stderr when the
    rows went to stdout)."""
    table = _rows(sink, job_id, errors, known)
    refused = sink.read_document(job_id, REFUSED_DOCUMENT) \
        if openai and sink.has_document(job_id, REFUSED_DOCUMENT) else None
    try:
        written = export_results(table, dest, fmt=fmt, openai=openai, errors=errors, chat=chat,
                                 refused=refused)
    except BrokenPipeError:
        stdout_closed()
    except OSError as exc:
        fail(f"cannot write {dest}: {exc.strerror or exc}", 1)
    if dest == STDIN:  # the rows are the output: the count goes to stderr
        click.echo(f"{written:,} rows written to standard output", err=True)
    else:
        click.echo(f"{written:,} rows written to {dest}")


@click.command()
@click.argument("job_id", callback=check_job_id)
@click.option("--timeout", type=float, default=None, help="Stop after this many seconds.")
@click.pass_context
def tail(ctx: click.Context, job_id: str, timeout: float | None) -> None:
    """Follow a job's live result stream (JSON lines) until the job ends."""
    from jobs.redis_store import stream_rows  # on use: the command line starts without redis

    client = client_of(ctx)
    last = "0-0"
    ends = None if timeout is None else time.monotonic() + timeout
    while ends is None or time.monotonic() < ends:
        try:  # read the state first: once terminal, every row is in the stream
            ended = client.store.status(job_id).state in TERMINAL
        except JobNotFound as exc:
            fail(str(exc), 2)
        # an entry is a chunk's rows: a few at a time keeps a reply to a few MB
        batches: Any = client.redis.xread({keys.stream(job_id): last}, count=16,
                                          block=None if ended else 1000)  # bytes replies
        for _, entries in batches:
            for entry_id, fields in entries:
                last = entry_id
                for row in stream_rows(fields):
                    click.echo(row)
        if not batches and ended:
            return


@click.command()
@click.argument("job_id", callback=check_job_id)
@click.option("--input", "input_path", default=None, type=click.Path(dir_okay=False),
              help="The job's input file, if it moved since submission.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def reconcile(ctx: click.Context, job_id: str, input_path: str | None, as_json: bool) -> None:
    """Rebuild a job's Redis state from its spec and parts on disk, and finish it."""
    client = client_of(ctx)
    try:
        spec_doc = client.sink.read_document(job_id, "spec.json")
    except FileNotFoundError:
        where = client.sink.location(layout.document(job_id, "spec.json"))
        fail(f"no spec.json for {job_id} at {where}", 2)
    spec = spec_from_document(spec_doc)
    queue = queue_for(spec)
    # Missing chunks go back through the feeder (its cursor rewound; recorded ones skipped).
    enqueue = client.feeder.enqueue_for(queue, spec.priority)
    try:
        report = reconcile_job(job_id, client.store, client.sink, enqueue, input_path=input_path)
        client.feed(queue)
    except JobError as exc:
        fail(str(exc), 2)
    if as_json:
        print_json(asdict(report))
    else:
        click.echo(f"{job_id}: {'recreated, ' if report.recreated else ''}"
                   f"{len(report.recorded)} chunk(s) recorded from disk, "
                   f"{len(report.requeued)} requeued; state {report.state}")


@click.command()
@click.argument("job_id", callback=check_job_id)
@click.option("--files", is_flag=True,
              help="Also remove its results, metrics parts and documents under the results root.")
@click.option("--force", is_flag=True,
              help="Delete a job that has not ended: cancel it and delete at once.")
@click.pass_context
def delete(ctx: click.Context, job_id: str, files: bool, force: bool) -> None:
    """Delete a job's Redis state (its results stay unless --files); a job that has not
    ended is refused: cancel it first, or --force."""
    from jobs.delete import delete_job  # on use: the command line loads no more than it runs

    client = client_of(ctx)
    try:
        if not files:
            client.collect(job_id)  # results through Redis: keep them, under the results
        report = delete_job(client.store, client.sink, job_id, files=files, force=force)
    except JobNotFound as exc:
        fail(str(exc), 2)
    except JobError as exc:
        fail(str(exc), 1)
    removed = f"; {report.files} results folder(s) removed" if files else \
        f"; results kept under {client.sink.location()}"
    click.echo(f"{job_id} deleted{' (' + report.state + ')' if report.state else ''}{removed}")


#: The commands this module adds to `inferq`.
COMMANDS = [submit, run, status, jobs, cancel, results, tail, reconcile, delete]
