"""How much work sits in each Celery queue on Redis, read the way kombu stores it.

With ``acks_late`` a worker's prefetched (and running) messages leave the queue's
list for kombu's ``unacked`` hash, so a list-length scaler sees too little work
(KEDA issue 6719). The signal that works counts both:

- **queued**: the queue's Redis lists; kombu keeps one per priority step, ``<queue>``
  for priority 0 and ``<queue>\\x06\\x16<step>`` for the others;
- **reserved**: messages delivered to a worker and not yet acknowledged (prefetched
  or running), entries of the ``unacked`` hash whose routing key is the queue.

The key names come from kombu's own Redis channel, so they stay kombu's.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

import redis
from kombu.transport.redis import Channel


def queue_lists(queue: str) -> list[str]:
    """Every Redis list kombu may keep ``queue``'s messages in (one per priority step)."""
    return [queue if not step else f"{queue}{Channel.sep}{step}"
            for step in Channel.priority_steps]


def queued(client: redis.Redis, queues: Iterable[str]) -> dict[str, int]:
    """Messages waiting in each queue's lists."""
    names = sorted(set(queues))
    pipe = client.pipeline(transaction=False)
    for queue in names:
        for key in queue_lists(queue):
            pipe.llen(key)
    lengths = iter(pipe.execute())
    return {q: sum(next(lengths) for _ in Channel.priority_steps) for q in names}


def reserved(client: redis.Redis) -> dict[str, int]:
    """Unacknowledged messages by queue (routing key), from kombu's ``unacked`` hash."""
    counts: Counter[str] = Counter()
    entries: Any = client.hvals(Channel.unacked_key)
    for raw in entries:
        try:
            _message, _exchange, routing_key = json.loads(raw)
        except (ValueError, TypeError):  # not kombu's shape: not ours to count
            continue
        counts[str(routing_key)] += 1
    return dict(counts)
