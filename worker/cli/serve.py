"""`inferq serve`: the OpenAI Batch API over this inferq (see `worker.server`)."""

from __future__ import annotations

import click

from worker.cli.context import fail, settings_of


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; a non-loopback one needs INFERQ_API_KEYS.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.pass_context
def serve(ctx: click.Context, host: str, port: int) -> None:
    """Serve /v1/files, /v1/batches and /v1/models for OpenAI clients."""
    import uvicorn  # on use: the server stack (start-up time)

    from worker.server import ServerSettings, create_app
    from worker.server.settings import is_loopback

    settings = settings_of(ctx)
    try:
        server = ServerSettings.from_env()
    except ValueError as exc:
        fail(f"configuration: {exc}", 2)
    if not server.api_keys and not is_loopback(host):
        fail(f"refusing to serve on {host} without API keys: set INFERQ_API_KEYS "
             "(comma-separated), or serve on 127.0.0.1", 2)
    try:
        app = create_app(settings, server)
    except ValueError as exc:
        fail(str(exc), 2)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)


#: The commands this module adds to `inferq`.
COMMANDS = [serve]
