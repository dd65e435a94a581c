"""``celery -A worker.celery_app worker``: the app configured from the environment.

`inferq worker` starts the same app with the right queues; use this module when
running Celery's own tools (flower, inspect) against inferq.
"""

from worker.app import create_app
from worker.config import Settings

settings = Settings.load()
app = create_app(settings)
