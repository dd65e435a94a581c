"""jobs: the job domain, free of Celery (specs, readers, chunks, sinks)."""

__all__: list[str] = []
