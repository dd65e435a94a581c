"""Real processes for tests: a private redis-server and inferq workers, on loopback.

They live in the package (`worker.local`), where the demo and the benchmarks use
them too; this module keeps the tests' import path.
"""

from worker.local import RedisServer, Worker, free_port

__all__ = ["RedisServer", "Worker", "free_port"]
