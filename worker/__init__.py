"""worker: the Celery runtime (app, routing, advertisement, model cache, beat, time
limits) and, in `worker.cli`, the `inferq` command line, which the runtime never imports."""

__all__: list[str] = []
