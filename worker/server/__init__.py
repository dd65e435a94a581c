"""`inferq serve`: the OpenAI Batch API over inferq, as one more client of Redis.

The server holds no state of its own. An uploaded file is a file under the results
root (`files`); a batch is an inferq job whose id it wraps (`batches`); the models are
the ones live workers advertise (`models`). Every answer is read from Redis and the
results root, so a server can be killed, restarted, or run beside another.

Modules: ``app`` (the application factory), ``settings`` (keys and limits from the
environment), ``auth`` (bearer keys), ``errors`` (OpenAI's error shape), ``upload``
(streaming multipart), ``files``, ``validate`` (an input file read as a batch),
``batches``, ``pending`` (batches being validated, leased in Redis) and ``models``.
While it serves, the app sweeps Redis: jobs past their deadline end ``expired``
(`jobs.expire`), and batches a stopped server was validating are resumed.
"""

from worker.server.app import create_app
from worker.server.settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]
