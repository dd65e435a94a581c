"""Worker commands: start a worker, list the live ones, the backends registered here."""

from __future__ import annotations

import time
from typing import Any

import click

import inference
from worker.cli.context import check_broker, client_of, fail, settings_of
from worker.cli.view import print_json, print_table


@click.command()
@click.option("--dry-run", is_flag=True, help="Print the queues and models, then exit.")
@click.option("--loglevel", default="INFO", show_default=True)
@click.pass_context
def worker(ctx: click.Context, dry_run: bool, loglevel: str) -> None:
    """Start a worker that consumes exactly the queues its backends and models can serve."""
    from worker.app import create_app, runtime  # on use: Celery (start-up time)

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


@click.command()
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


@click.command()
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


#: The commands this module adds to `inferq`.
COMMANDS = [worker, workers, backends]
