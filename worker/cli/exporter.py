"""`inferq exporter`: inferq's Prometheus metrics on their own port (`worker.metrics`)."""

from __future__ import annotations

import click

from worker.cli.context import fail, settings_of


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 for a Prometheus on another host).")
@click.option("--port", default=9808, show_default=True, type=click.IntRange(0, 65535))
@click.pass_context
def exporter(ctx: click.Context, host: str, port: int) -> None:
    """Serve inferq's metrics at /metrics for Prometheus: queue depths, jobs by state,
    rows and tokens, worker heartbeats, all read from Redis at each scrape."""
    import redis  # on use: start-up time of the other commands
    from prometheus_client import start_http_server

    from worker.metrics import metrics_registry

    settings = settings_of(ctx)
    registry = metrics_registry(redis.Redis.from_url(settings.broker_url))
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}", 1)
    click.echo(f"inferq exporter: http://{host}:{server.server_port}/metrics", err=True)
    try:
        thread.join()
    except KeyboardInterrupt:
        server.shutdown()


#: The commands this module adds to `inferq`.
COMMANDS = [exporter]
