"""The `inferq` command line.

Exit codes: 0 success (a waited-for job completed); 1 the operation failed or the
job ended failed, expired or cancelled (or Redis cannot be reached); 2 bad usage or
input (invalid spec, bad input file, no worker can serve the job, a configuration
or Redis password that is refused).
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from importlib.metadata import version
from typing import Any, NoReturn
from urllib.parse import urlsplit

import click

import inference
from jobs.errors import JobError, JobNotFound
from jobs.store import TERMINAL
from worker.cli_options import build_spec, job_options
from worker.cli_view import Progress, print_json, print_table, show_status, status_dict
from worker.config import Settings, redact


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"inferq: {message}", err=True)
    sys.exit(code)


def settings_of(ctx: click.Context) -> Settings:
    obj: dict[str, Any] = ctx.ensure_object(dict)
    if "settings" not in obj:
        try:
            obj["settings"] = Settings.load(obj.get("config"), broker_url=obj.get("broker_url"),
                                            results=obj.get("results"))
        except (OSError, ValueError) as exc:
            fail(f"configuration: {exc}", 2)
    settings: Settings = obj["settings"]
    return settings


def redis_failure(url: str, exc: Exception) -> tuple[str, int]:
    """The message and exit code for a Redis error; the URL's password never shows."""
    import redis

    password = urlsplit(url).password or ""
    detail = str(exc).replace(password, "***") if password else str(exc)
    if isinstance(exc, redis.AuthenticationError):
        refusal = ("refused the password in the broker URL" if password else
                   "needs a password and the broker URL has none")
        return (f"Redis at {redact(url)} {refusal} ({detail}); set it in INFERQ_BROKER_URL "
                "or --broker-url as redis://:PASSWORD@host:port/db", 2)
    return f"cannot reach Redis at {redact(url)}: {detail}", 1


def check_broker(client: Any, url: str) -> None:
    """Fail now on a Redis that refuses us (password, TLS); wait for one that is down.

    A worker often starts before its Redis (compose, boot order, a restart): Celery
    waits for the broker (``broker_connection_retry_on_startup``), so a refused or
    timed-out connection only warns. Credentials or a certificate that are refused do
    not heal with time: they raise, and the command exits with the reason.
    """
    import ssl

    import redis

    try:
        client.ping()
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        if isinstance(exc, redis.AuthenticationError) or isinstance(exc.__context__,
                                                                    ssl.SSLError):
            raise
        click.echo(f"inferq: {redis_failure(url, exc)[0]}; waiting for it", err=True)


class _Main(click.Group):
    """The command group: a Redis error in any command is one line, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        import redis

        try:
            return super().invoke(ctx)
        except redis.RedisError as exc:
            obj = ctx.ensure_object(dict)
            url = obj["settings"].broker_url if "settings" in obj else obj.get("broker_url")
            fail(*redis_failure(url or "the broker URL", exc))


def check_job_id(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A JOB_ID argument: results paths are built from it, so never a path."""
    from jobs.spec import JOB_ID

    if not JOB_ID.match(value):
        raise click.BadParameter(f"{value!r} is not a valid job id (letters, digits, '_' "
                                 "and '-', at most 64)")
    return value


def client_of(ctx: click.Context) -> Any:
    from worker.client import Client

    return Client(settings_of(ctx))


@click.group(cls=_Main)
@click.version_option(version("inferq"), prog_name="inferq")
@click.option("--config", envvar="INFERQ_CONFIG", default=None, help="TOML settings file.")
@click.option("--broker-url", default=None, help="Redis URL (INFERQ_BROKER_URL).")
@click.option("--results", default=None,
              help="Results path or URI, or 'redis' (INFERQ_RESULTS).")
@click.pass_context
def main(ctx: click.Context, config: str | None, broker_url: str | None,
         results: str | None) -> None:
    """inferq: bulk LLM inference over Celery queues, on llama.cpp and MLX workers."""
    ctx.ensure_object(dict).update(config=config, broker_url=broker_url, results=results)


# -- jobs -----------------------------------------------------------------------------


@main.command()
@job_options
@click.option("--wait", is_flag=True, help="Show progress until the job ends.")
@click.option("--queue-anyway", is_flag=True, help="Queue even if no live worker serves it.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def submit(ctx: click.Context, /, wait: bool, queue_anyway: bool, as_json: bool,
           **kw: Any) -> None:
    """Submit a classify or generate job over INPUT (JSONL, CSV, Parquet or text)."""
    from worker.client import NoWorkerForJob

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


@main.command()
@job_options
@click.option("--model-path", default=None,
              help="Load this GGUF file or MLX directory as the model (no catalog needed).")
@click.option("--model-root", multiple=True, help="Find the model id under this root.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def run(ctx: click.Context, /, model_path: str | None, model_root: tuple[str, ...],
        as_json: bool, **kw: Any) -> None:
    """Run a job in this process, without Redis or Celery: same files on disk."""
    from worker.embedded import run_embedded

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


@main.command()
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


@main.command()
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


@main.command()
@click.argument("job_id", callback=check_job_id)
@click.pass_context
def cancel(ctx: click.Context, job_id: str) -> None:
    """Cancel a job: running chunks stop at their next batch; finished rows stay."""
    try:
        current = client_of(ctx).cancel(job_id)
    except JobNotFound as exc:
        fail(str(exc), 2)
    click.echo(f"{job_id} {current.state}")


@main.command()
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
    from worker.export import export_results

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
        written = export_results(table, dest, openai=openai, errors=errors_only)
        click.echo(f"{written:,} rows written to {dest}")
        return
    rows = table.slice(0, head).to_pylist()
    print_table(["ROW", "CUSTOM_ID", "LABEL/TEXT", "ERROR"],
                [[str(r["row_index"]), r["custom_id"],
                  (r["label"] or r["text"] or "")[:50].replace("\n", " "),
                  r["error_code"] or ""] for r in rows])
    click.echo(f"({table.num_rows:,} rows; --to FILE writes them all)")


@main.command()
@click.argument("job_id", callback=check_job_id)
@click.option("--timeout", type=float, default=None, help="Stop after this many seconds.")
@click.pass_context
def tail(ctx: click.Context, job_id: str, timeout: float | None) -> None:
    """Follow a job's live result stream (JSON lines) until the job ends."""
    from jobs import keys

    client = client_of(ctx)
    last = "0-0"
    ends = None if timeout is None else time.monotonic() + timeout
    while ends is None or time.monotonic() < ends:
        try:  # read the state first: once terminal, every row is in the stream
            ended = client.store.status(job_id).state in TERMINAL
        except JobNotFound as exc:
            fail(str(exc), 2)
        batches = client.redis.xread({keys.stream(job_id): last}, count=500,
                                     block=None if ended else 1000)
        for _, entries in batches:
            for entry_id, fields in entries:
                last = entry_id
                click.echo(fields[b"row"].decode())
        if not batches and ended:
            return


# -- workers and models -----------------------------------------------------------------


@main.command()
@click.option("--dry-run", is_flag=True, help="Print the queues and models, then exit.")
@click.option("--loglevel", default="INFO", show_default=True)
@click.pass_context
def worker(ctx: click.Context, dry_run: bool, loglevel: str) -> None:
    """Start a worker that consumes exactly the queues its backends and models can serve."""
    from worker.app import create_app, runtime

    settings = settings_of(ctx)
    rt = runtime(settings)
    if not rt.queues:
        fail(f"no servable models: backends {', '.join(rt.backends) or 'none'}, catalog "
             f"{', '.join(rt.catalog.model_ids()) or 'empty'} (set INFERQ_MODEL_ROOTS or "
             "INFERQ_CATALOG)", 2)
    if dry_run:
        print_json({"name": settings.worker_name, "backends": rt.backends,
                    "models": rt.served, "queues": rt.queues})
        return
    check_broker(rt.redis, settings.broker_url)
    app = create_app(settings)
    app.worker_main(["worker", "-Q", ",".join(rt.queues), "-P", settings.pool,
                     "-c", str(settings.concurrency), "-n", settings.worker_name,
                     "--without-gossip", "--without-mingle", "-l", loglevel])


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def workers(ctx: click.Context, as_json: bool) -> None:
    """Live workers: what they serve and what they are doing."""
    found = client_of(ctx).workers()
    if as_json:
        print_json(found)
        return
    now = time.time()
    print_table(["WORKER", "BACKENDS", "MODELS", "CURRENT", "CHUNKS", "ROWS", "SEEN"],
                [[w["name"], ",".join(w["backends"]), ",".join(sorted(w["models"])),
                  w.get("current") or "-", str(w["counters"]["chunks"]),
                  f"{w['counters']['rows']:,}", f"{now - w['heartbeat_at']:.0f}s ago"]
                 for w in found])


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def backends(as_json: bool) -> None:
    """Backends registered here, whether each can run, and which is the default."""
    registry = inference.registry()
    try:
        chosen = registry.default().name
    except inference.InferenceError:
        chosen = ""
    rows: list[dict[str, Any]] = [
        {"name": name, "available": registry.get(name).available(), "default": name == chosen}
        for name in registry.preference_order()]
    if as_json:
        print_json(rows)
        return
    print_table(["BACKEND", "AVAILABLE", "DEFAULT"],
                [[r["name"], "yes" if r["available"] else "no", "*" if r["default"] else ""]
                 for r in rows])


@main.command()
@click.argument("job_id", callback=check_job_id)
@click.option("--input", "input_path", default=None, type=click.Path(dir_okay=False),
              help="The job's input file, if it moved since submission.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def reconcile(ctx: click.Context, job_id: str, input_path: str | None, as_json: bool) -> None:
    """Rebuild a job's Redis state from its spec and parts on disk, and finish it."""
    from jobs.reconcile import reconcile as rebuild
    from jobs.spec import spec_from_document
    from worker.app import TASK
    from worker.routing import queue_for

    client = client_of(ctx)
    try:
        spec_doc = client.sink.read_document(job_id, "spec.json")
    except FileNotFoundError:
        fail(f"no spec.json for {job_id} under {client.sink.root}", 2)
    queue = queue_for(spec_from_document(spec_doc))

    def enqueue(job: str, chunk: int) -> None:
        client.app.send_task(TASK, args=[job, chunk], queue=queue)

    try:
        report = rebuild(job_id, client.store, client.sink, enqueue, input_path=input_path)
    except JobError as exc:
        fail(str(exc), 2)
    if as_json:
        print_json(asdict(report))
    else:
        click.echo(f"{job_id}: {'recreated, ' if report.recreated else ''}"
                   f"{len(report.recorded)} chunk(s) recorded from disk, "
                   f"{len(report.requeued)} requeued; state {report.state}")



def _register_subcommands() -> None:
    from worker.cli_eval import beat, eval_group
    from worker.cli_models import models_group
    from worker.config_check import config_group

    main.add_command(eval_group)
    main.add_command(beat)
    main.add_command(config_group)
    main.add_command(models_group)


_register_subcommands()
