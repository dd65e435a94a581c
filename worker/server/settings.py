"""The server's own settings, from the environment; the rest are `worker.config.Settings`.

- ``INFERQ_API_KEYS``: comma-separated bearer keys; empty = no authentication, which
  is allowed on a loopback host only.
- ``INFERQ_MAX_UPLOAD_BYTES`` (default 200 MB, OpenAI's limit for batch files) and
  ``INFERQ_MAX_UPLOAD_LINES`` (default 50,000 requests, OpenAI's): past either, an
  upload is refused with 413 and nothing is kept.
- ``INFERQ_BATCH_CHUNK_SIZE``: rows per chunk of a batch's job (default 256).
- ``INFERQ_SWEEP_SECONDS``: how often the server sweeps Redis (default 5, 0 = never):
  it ends the jobs past their deadline that no worker ended (`jobs.expire.Sweeper`)
  and resumes the validation of batches whose server stopped (`pending`).
- ``INFERQ_VALIDATION_LEASE_SECONDS``: how long a batch being validated stays this
  server's without renewal (default 30): a stopped server's batches resume after it.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSettings:
    """How `inferq serve` authenticates and what it accepts."""

    api_keys: tuple[str, ...] = ()          #: () = no authentication (loopback only)
    max_upload_bytes: int = 200 * 2**20     #: an upload's largest file
    max_upload_lines: int = 50_000          #: an upload's most lines (requests)
    chunk_size: int = 256                   #: rows per chunk of a batch's job
    sweep_seconds: float = 5.0              #: between sweeps (expiry, resumption); 0 = none
    validation_lease: float = 30.0          #: a validating batch's lease, renewed by its server

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> ServerSettings:
        keys = tuple(k.strip() for k in env.get("INFERQ_API_KEYS", "").split(",") if k.strip())
        return cls(api_keys=keys,
                   max_upload_bytes=_positive(env, "INFERQ_MAX_UPLOAD_BYTES", 200 * 2**20),
                   max_upload_lines=_positive(env, "INFERQ_MAX_UPLOAD_LINES", 50_000),
                   chunk_size=_positive(env, "INFERQ_BATCH_CHUNK_SIZE", 256),
                   sweep_seconds=_seconds(env, "INFERQ_SWEEP_SECONDS", 5.0),
                   validation_lease=_seconds(env, "INFERQ_VALIDATION_LEASE_SECONDS", 30.0,
                                             zero=False))


def _positive(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "")
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a whole number") from None
    if value <= 0:
        raise ValueError(f"{name}={raw!r} must be positive")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float, *, zero: bool = True
             ) -> float:
    raw = env.get(name, "")
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number of seconds") from None
    if not 0 <= value < float("inf") or (value == 0 and not zero):
        raise ValueError(f"{name}={raw!r} must be {'0 (never) or ' if zero else ''}a "
                         "positive number of seconds")
    return value


def is_loopback(host: str) -> bool:
    """True for a host only this machine reaches: localhost, 127.0.0.0/8, ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
