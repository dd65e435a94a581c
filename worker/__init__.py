"""worker: everything Celery, and the `inferq` command line."""

__all__: list[str] = []
