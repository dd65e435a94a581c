"""Job commands: submit, run, status, jobs, cancel, results, tail, reconcile."""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from typing import Any

import click

import inference
from jobs import TERMINAL, JobError, JobNotFound, keys, layout, reconcile_job, spec_from_document
from worker.cli.context import check_job_id, client_of, fail, settings_of
from worker.cli.options import build_spec, job_options
from worker.cli.view import Progress, print_json, print_table, show_status, status_dict
from worker.export import REFUSED_DOCUMENT, export_results, is_chat
from worker.routing import queue_for


@click.command()
@job_options
@click.option("--wait", is_flag=True, help="Show progress until the job ends.")
@click.option("--queue-anyway", is_flag=True, help="Queue even if no live worker serves it.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def submit(ctx: click.Context, /, wait: bool, queue_anyway: bool, as_json: bool,
           **kw: Any) -> None:
    """Submit a classify or generate job over INPUT (JSONL, CSV, Parquet or text)."""
    from worker.client import NoWorkerForJob  # on use: Celery (start-up time)

    client = client_of(ctx)
    try:
        spec = build_spec(kw)
        status = client.submit(spec, kw["input"], fmt=kw["fmt"], queue_anyway=queue_anyway)
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
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def run(ctx: click.Context, /, model_path: str | None, model_root: tuple[str, ...],
        as_json: bool, **kw: Any) -> None:
    """Run a job in this process, without Redis or Celery: same files on disk."""
    from worker.embedded import run_embedded  # on use: the worker runtime (start-up time)

    settings = settings_of(ctx)
    try:
        spec = build_spec(kw)
        status = run_embedded(settings, spec, kw["input"], fmt=kw["fmt"], model_path=model_path,
                              model_roots=model_root, on_progress=Progress())
    except (JobError, inference.InferenceError) as exc:
        fail(str(exc), 2)
    if as_json:
        print_json(status_dict(status))
    else:
        click.echo(f"{status.job_id} {status.state}: {status.completed:,} completed, "
                   f"{status.failed:,} failed; results in {settings.results_root()}")
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
@click.option("--to", "dest", type=click.Path(dir_okay=False), default=None,
              help="Write every row to a .jsonl or .csv file.")
@click.option("--openai", is_flag=True,
              help="With --to: the OpenAI Batch output format (and --errors its error file).")
@click.option("--errors", "errors_only", is_flag=True, help="Only the error rows.")
@click.pass_context
def results(ctx: click.Context, job_id: str, head: int, dest: str | None, openai: bool,
            errors_only: bool) -> None:
    """Show or export a job's result rows."""
    if openai and (not dest or dest.endswith(".csv")):
        fail("--openai writes JSON lines: use it with --to FILE.jsonl", 2)
    client = client_of(ctx)
    client.collect(job_id)
    table = client.sink.read_results(job_id)
    if not table.num_rows:
        try:  # no rows yet, or a mistyped id: say which
            client.store.status(job_id)
        except JobNotFound as exc:
            fail(str(exc), 2)
    if errors_only:
        table = table.filter(table.column("error_code").is_valid())
    if dest:
        try:
            chat = openai and is_chat(client.store.get_spec(job_id).metadata)
        except JobNotFound:  # Redis forgot it: its rows are still on disk
            chat = False
        refused = client.sink.read_document(job_id, REFUSED_DOCUMENT) \
            if openai and client.sink.has_document(job_id, REFUSED_DOCUMENT) else None
        written = export_results(table, dest, openai=openai, errors=errors_only, chat=chat,
                                 refused=refused)
        click.echo(f"{written:,} rows written to {dest}")
        return
    rows = table.slice(0, head).to_pylist()
    print_table(["ROW", "CUSTOM_ID", "LABEL/TEXT", "ERROR"],
                [[str(r["row_index"]), r["custom_id"],
                  (r["label"] or r["text"] or "")[:50].replace("\n", " "),
                  r["error_code"] or ""] for r in rows])
    click.echo(f"({table.num_rows:,} rows; --to FILE writes them all)")


@click.command()
@click.argument("job_id", callback=check_job_id)
@click.option("--timeout", type=float, default=None, help="Stop after this many seconds.")
@click.pass_context
def tail(ctx: click.Context, job_id: str, timeout: float | None) -> None:
    """Follow a job's live result stream (JSON lines) until the job ends."""
    client = client_of(ctx)
    last = "0-0"
    ends = None if timeout is None else time.monotonic() + timeout
    while ends is None or time.monotonic() < ends:
        try:  # read the state first: once terminal, every row is in the stream
            ended = client.store.status(job_id).state in TERMINAL
        except JobNotFound as exc:
            fail(str(exc), 2)
        batches: Any = client.redis.xread({keys.stream(job_id): last}, count=500,
                                          block=None if ended else 1000)  # bytes replies
        for _, entries in batches:
            for entry_id, fields in entries:
                last = entry_id
                click.echo(fields[b"row"].decode())
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
    from worker.app import TASK  # on use: Celery (start-up time)

    client = client_of(ctx)
    try:
        spec_doc = client.sink.read_document(job_id, "spec.json")
    except FileNotFoundError:
        where = client.sink.location(layout.document(job_id, "spec.json"))
        fail(f"no spec.json for {job_id} at {where}", 2)
    queue = queue_for(spec_from_document(spec_doc))

    def enqueue(job: str, chunk: int) -> None:
        client.app.send_task(TASK, args=[job, chunk], queue=queue)

    try:
        report = reconcile_job(job_id, client.store, client.sink, enqueue, input_path=input_path)
    except JobError as exc:
        fail(str(exc), 2)
    if as_json:
        print_json(asdict(report))
    else:
        click.echo(f"{job_id}: {'recreated, ' if report.recreated else ''}"
                   f"{len(report.recorded)} chunk(s) recorded from disk, "
                   f"{len(report.requeued)} requeued; state {report.state}")


#: The commands this module adds to `inferq`.
COMMANDS = [submit, run, status, jobs, cancel, results, tail, reconcile]
