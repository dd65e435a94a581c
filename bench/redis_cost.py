"""What a stretch of work cost one redis-server: commands, bytes and its own CPU time.

Read from ``INFO commandstats``, ``INFO stats`` and ``INFO cpu`` before and after;
the deltas include every client of that server (workers' heartbeats and Celery's
polling too), which is what a deployment's Redis pays. Redis runs commands on one
thread, so its CPU seconds per chunk bound the chunks per second one Redis serves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis


@dataclass(frozen=True, slots=True)
class RedisSample:
    calls: dict[str, int]     #: command name -> calls so far
    net_in: int               #: bytes received from clients so far
    net_out: int              #: bytes sent to clients so far
    cpu: float                #: the server's CPU seconds so far (user + system, all threads)
    cpu_main: float           #: its main thread's, where commands run (0 = not reported)


def sample(client: redis.Redis) -> RedisSample:
    stats: Any = client.info("commandstats")
    net: Any = client.info("stats")
    cpu: Any = client.info("cpu")
    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
    main = float(cpu.get("used_cpu_user_main_thread", 0)) + float(
        cpu.get("used_cpu_sys_main_thread", 0))
    return RedisSample(calls, int(net["total_net_input_bytes"]),
                       int(net["total_net_output_bytes"]),
                       float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), main)


@dataclass(frozen=True, slots=True)
class RedisCost:
    """The difference of two samples, per unit of work (a chunk)."""

    commands: float
    bytes_in: float
    bytes_out: float
    cpu_ms: float
    by_command: dict[str, float]

    @classmethod
    def between(cls, before: RedisSample, after: RedisSample, units: int) -> RedisCost:
        # INFO itself is one of the calls: leave out the sampling's own commands
        by = {k: (v - before.calls.get(k, 0)) / units for k, v in after.calls.items()
              if k != "info" and v != before.calls.get(k, 0)}
        cpu = after.cpu_main - before.cpu_main if after.cpu_main else after.cpu - before.cpu
        return cls(sum(by.values()), (after.net_in - before.net_in) / units,
                   (after.net_out - before.net_out) / units, cpu / units * 1000, by)

    def top(self, n: int = 8) -> str:
        """The ``n`` most called commands, ``name count`` per unit."""
        ranked = sorted(self.by_command.items(), key=lambda kv: -kv[1])[:n]
        return ", ".join(f"{k} {v:.1f}" for k, v in ranked)
