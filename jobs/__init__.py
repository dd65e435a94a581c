"""jobs: the job domain, free of Celery (specs, readers, chunks, sinks). Filled by the queue runtime."""

__all__: list[str] = []
