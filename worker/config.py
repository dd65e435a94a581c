"""Worker and client configuration: environment variables over a TOML file over defaults.

Every setting has one environment variable; the file (``--config``, or
``INFERQ_CONFIG``) holds the same names in lower case without the prefix::

    broker_url = "redis://:secret@127.0.0.1:6379/0"
    results = "/data/inferq"            # a path or pyarrow URI; "redis" = through Redis
    model_roots = ["/models"]
    catalog = "/etc/inferq/catalog.toml"
"""

from __future__ import annotations

import os
import socket
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


def _split(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.replace(os.pathsep, ",").split(",") if v.strip())


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    broker_url: str = "redis://127.0.0.1:6379/0"   #: INFERQ_BROKER_URL
    results: str = "results"                        #: INFERQ_RESULTS; "redis" = via Redis
    model_roots: tuple[str, ...] = ()               #: INFERQ_MODEL_ROOTS (comma or ':')
    catalog: str = ""                               #: INFERQ_CATALOG (TOML file)
    backends: tuple[str, ...] = ()                  #: INFERQ_BACKENDS; () = all available
    fake_models: tuple[str, ...] = ()               #: INFERQ_FAKE_MODELS (tests, benchmarks)
    worker_name: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    chunk_time_limit: int = 1800                    #: seconds a chunk may run
    visibility_timeout: int = 7200                  #: broker redelivery; far above the limit
    max_attempts: int = 3                           #: deliveries of one chunk before failing it
    pool: str = "solo"                              #: solo or threads (engines are not fork-safe)
    concurrency: int = 1
    model_cache: int = 2                            #: models kept loaded
    heartbeat_seconds: float = 5.0
    parallel_slots: int = 0                         #: LoadOptions.parallel_slots
    context_len: int = 0                            #: LoadOptions.context_len

    def __post_init__(self) -> None:
        if self.pool not in ("solo", "threads"):
            raise ValueError(f"pool={self.pool!r}: use solo or threads (engines are not "
                             "fork-safe)")
        if self.visibility_timeout <= self.chunk_time_limit:
            raise ValueError(f"visibility_timeout={self.visibility_timeout} must be above "
                             f"chunk_time_limit={self.chunk_time_limit}, or long chunks run twice")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    @classmethod
    def load(cls, config_file: str | None = None, **overrides: Any) -> Settings:
        """Defaults, then the file, then the environment, then ``overrides``."""
        values: dict[str, Any] = {}
        path = config_file or os.environ.get("INFERQ_CONFIG")
        if path:
            with open(path, "rb") as f:
                values.update(tomllib.load(f))
        types = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(values) - set(types))
        if unknown:
            raise ValueError(f"{path}: unknown setting {unknown[0]!r}")
        for name, kind in types.items():
            env = os.environ.get(f"INFERQ_{name.upper()}")
            if env is not None:
                values[name] = env
            if name in values:
                values[name] = _coerce(name, str(kind), values[name])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def results_via_redis(self) -> bool:
        return self.results == "redis"

    def results_root(self) -> str:
        """The results location for this process (a local path is made absolute)."""
        if self.results_via_redis or "://" in self.results:
            return self.results
        return str(Path(self.results).resolve())


def _coerce(name: str, kind: str, value: Any) -> Any:
    try:
        if "tuple" in kind:
            return _split(value) if isinstance(value, str) else tuple(str(v) for v in value)
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"setting {name}={value!r}: {exc}") from exc
    return value
