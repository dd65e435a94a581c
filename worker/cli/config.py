"""`inferq config check`: what a worker would consume here, and settings refused for production.

Refused (exit 2, one line each):

- a Redis URL without a password whose host is not loopback (127.0.0.0/8, ::1, localhost);
- a visibility timeout shorter than ``chunk_time_limit + RETRY_WAIT`` (a retried chunk
  waits up to ``RETRY_WAIT`` seconds before it runs again, so a shorter timeout lets
  the broker redeliver a chunk that is still running);
- a Redis that evicts keys (``maxmemory-policy`` other than ``noeviction``): an evicted
  job record or queued message is lost work.

A Redis that does not permit ``CONFIG GET`` (managed services often rename it) is a
warning: its eviction policy cannot be checked from here. A Redis that cannot be
reached exits 1, as in every command, unless a setting is already refused (exit 2).
Settings refuses a pool other than solo or threads before this module runs.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import click

from worker.catalog import Catalog
from worker.cli.context import fail, redis_failure, settings_of
from worker.cli.view import print_json
from worker.config import Settings, redact
from worker.routing import worker_queues

#: Seconds a retried chunk may wait before it runs again (jobs retry with backoff).
RETRY_WAIT = 60


@dataclass
class Findings:
    """What a check found: refusals make the command exit 2; warnings do not."""

    refused: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_settings(settings: Settings) -> Findings:
    """The refusals that need no connection: the URL's password and the timeouts."""
    found = Findings()
    parts = urlsplit(settings.broker_url)
    host = parts.hostname or ""
    if parts.scheme in ("redis", "rediss") and not parts.password and not is_loopback(host):
        found.refused.append(
            f"broker_url {redact(settings.broker_url)}: no password for a Redis on {host!r}, "
            "which is not loopback; set requirepass on Redis and use "
            "redis://:PASSWORD@host:port/db")
    needed = settings.chunk_time_limit + RETRY_WAIT
    if settings.visibility_timeout < needed:
        found.refused.append(
            f"visibility_timeout={settings.visibility_timeout} is shorter than "
            f"chunk_time_limit + {RETRY_WAIT} = {needed} (retries wait up to {RETRY_WAIT} s), "
            f"so Redis redelivers chunks still running; set INFERQ_VISIBILITY_TIMEOUT "
            f"to at least {needed}")
    return found


def check_redis(client: Any, url: str, found: Findings) -> None:
    """Refuse a Redis that evicts keys; warn where its policy cannot be read."""
    import redis  # on use (start-up time)

    try:
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy", "")
    except redis.ResponseError as exc:
        found.warnings.append(f"Redis at {redact(url)} does not permit CONFIG GET ({exc}); "
                              "check by hand that maxmemory-policy is noeviction")
        return
    if isinstance(policy, bytes):
        policy = policy.decode()
    if policy != "noeviction":
        found.refused.append(
            f"Redis at {redact(url)} has maxmemory-policy {policy}: it may evict job "
            "records and queued chunks; set maxmemory-policy noeviction")


def worker_view(settings: Settings) -> dict[str, Any]:
    """The name, backends, catalog models and queues `inferq worker` would use."""
    from worker.runtime import usable_backends  # on use: redis (start-up time)

    backends = usable_backends(settings)
    catalog = Catalog.build(roots=settings.model_roots, catalog_file=settings.catalog,
                            fake_models=settings.fake_models)
    served = catalog.served(backends)
    return {"name": settings.worker_name, "broker_url": redact(settings.broker_url),
            "results": settings.results, "backends": backends,
            "models": catalog.model_ids(), "served": served, "queues": worker_queues(served)}


@click.group("config")
def config_group() -> None:
    """Settings: check them before a deployment."""


@config_group.command("check")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def config_check(ctx: click.Context, as_json: bool) -> None:
    """What a worker would consume here; exit 2 on settings unsafe for production."""
    import redis  # on use (start-up time)

    settings = settings_of(ctx)
    view = worker_view(settings)
    found = check_settings(settings)
    client = redis.Redis.from_url(settings.broker_url, socket_timeout=10,
                                  socket_connect_timeout=10)
    try:
        check_redis(client, settings.broker_url, found)
    except redis.RedisError as exc:
        message, code = redis_failure(settings.broker_url, exc)
        if not found.refused:
            fail(message, code)
        found.warnings.append(f"{message}; its eviction policy is not checked")
    finally:
        client.close()
    if as_json:
        print_json(view | {"refused": found.refused, "warnings": found.warnings})
    else:
        for key in ("name", "broker_url", "results"):
            click.echo(f"{key}: {view[key]}")
        click.echo(f"backends: {', '.join(view['backends']) or '(none)'}")
        click.echo(f"models: {', '.join(view['models']) or '(none)'}")
        click.echo(f"queues: {', '.join(view['queues']) or '(none: no servable models)'}")
    for line in found.warnings:
        click.echo(f"inferq: warning: {line}", err=True)
    for line in found.refused:
        click.echo(f"inferq: refused: {line}", err=True)
    if found.refused:
        raise SystemExit(2)


#: The commands this module adds to `inferq`.
COMMANDS = [config_group]
