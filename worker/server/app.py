"""The application factory: one FastAPI app over a client's Redis and results root,
and the sweep it runs while it serves."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import redis
from fastapi import FastAPI

from jobs.expire import Sweeper
from worker.client import Client
from worker.config import Settings
from worker.metrics import metrics_registry
from worker.runtime import make_sink
from worker.server import batches, errors, files, metrics, models
from worker.server.settings import ServerSettings

log = logging.getLogger("inferq.serve")


def create_app(settings: Settings, server: ServerSettings | None = None) -> FastAPI:
    """The OpenAI-compatible API over ``settings``' Redis and results root.

    The results root must be a local path (or ``redis``, whose parts are collected
    into the local ``results`` directory, as the command line does). While it serves,
    every ``server.sweep_seconds`` the app ends the jobs past their deadline
    (`jobs.expire.Sweeper`, publishing where workers publish) and resumes the batches
    whose validating server stopped (`batches.Batches.resume_stale`).
    """
    server = server or ServerSettings.from_env()
    client = Client(settings)
    if not client.sink.local:
        raise ValueError(f"inferq serve keeps files under a local results root; "
                         f"{settings.results!r} is not local: mount it and pass its path")
    the_files = files.FileStore(client.sink.root)
    the_batches = batches.Batches(client, the_files, server.chunk_size,
                                  lease=server.validation_lease)
    sweeper = Sweeper(client.store, make_sink(settings, client.redis))

    def sweep() -> None:
        sweeper.sweep()
        the_batches.resume_stale()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(_every(server.sweep_seconds, sweep)) \
            if server.sweep_seconds else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            the_batches.close()

    app = FastAPI(title="inferq", version="1", docs_url=None, redoc_url=None,
                  openapi_url=None, lifespan=lifespan)
    app.state.server = server
    app.state.files = the_files
    app.state.batches = the_batches
    app.state.metrics = metrics_registry(client.redis)
    errors.install(app)
    for module in (files, batches, models, metrics):
        app.include_router(module.router)
    return app


async def _every(seconds: float, sweep: Callable[[], None]) -> None:
    """``sweep`` every ``seconds``, off the event loop; a failed sweep (Redis down, a
    results root gone) is logged and tried again at the next."""
    while True:
        try:
            await asyncio.to_thread(sweep)
        except redis.RedisError as exc:
            log.warning("sweep: Redis: %s; trying again in %ss", exc, seconds)
        except Exception:  # the sweep must outlive any one job's trouble
            log.exception("sweep failed; trying again in %ss", seconds)
        await asyncio.sleep(seconds)
