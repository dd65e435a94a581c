"""The application factory: one FastAPI app over a client's Redis and results root."""

from __future__ import annotations

from fastapi import FastAPI

from worker.client import Client
from worker.config import Settings
from worker.server import batches, errors, files, models
from worker.server.settings import ServerSettings


def create_app(settings: Settings, server: ServerSettings | None = None) -> FastAPI:
    """The OpenAI-compatible API over ``settings``' Redis and results root.

    The results root must be a local path (or ``redis``, whose parts are collected
    into the local ``results`` directory, as the command line does).
    """
    server = server or ServerSettings.from_env()
    client = Client(settings)
    if not client.sink.local:
        raise ValueError(f"inferq serve keeps files under a local results root; "
                         f"{settings.results!r} is not local: mount it and pass its path")
    app = FastAPI(title="inferq", version="1", docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.server = server
    app.state.files = files.FileStore(client.sink.root)
    app.state.batches = batches.Batches(client, app.state.files, server.chunk_size)
    errors.install(app)
    for module in (files, batches, models):
        app.include_router(module.router)
    return app
