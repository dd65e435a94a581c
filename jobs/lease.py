"""A lease in Redis: one process at a time leads a periodic task; another takes over
when the leader dies.

The lease is a string key holding its holder's name with a TTL. `Lease.hold` takes it
when it is free (``SET NX PX``) or renews it when this holder has it (a Lua
compare-and-renew: a holder whose lease expired and was taken cannot renew the new
holder's); a killed holder never renews, so after at most one TTL another process
holds it. A holder must finish each step well inside the TTL: the lease says who
should lead, and the work it guards stays safe should two processes ever overlap.
"""

from __future__ import annotations

import redis

_RENEW = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Lease:
    """``key`` held by ``holder`` for ``seconds`` at a time."""

    def __init__(self, client: redis.Redis, key: str, holder: str, seconds: float) -> None:
        if seconds <= 0:
            raise ValueError(f"lease seconds={seconds!r} must be positive")
        self.redis, self.key, self.holder = client, key, holder
        self.millis = max(1, int(seconds * 1000))
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def hold(self) -> bool:
        """Take the lease if free, renew it if ours; True while this holder has it."""
        return bool(self._renew(keys=[self.key], args=[self.holder, self.millis]))

    def release(self) -> None:
        """Give the lease up now (only if still ours), so another need not wait a TTL."""
        self._release(keys=[self.key], args=[self.holder])

    def holder_now(self) -> str | None:
        """Who holds the lease now; None if nobody."""
        raw = self.redis.get(self.key)
        return raw.decode() if isinstance(raw, bytes) else None
