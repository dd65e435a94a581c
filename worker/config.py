"""Worker and client configuration: environment variables over a TOML file over defaults.

Every setting has one environment variable; the file (``--config``, or
``INFERQ_CONFIG``) holds the same names in lower case without the prefix::

    broker_url = "redis://:secret@127.0.0.1:6379/0"
    results = "/data/inferq"            # a path or pyarrow URI; "redis" = through Redis
    model_roots = ["/models"]
    catalog = "/etc/inferq/catalog.toml"

Redis over TLS: ``rediss://host:6380/0?ssl_cert_reqs=required&ssl_ca_certs=/etc/ca.pem``
(without options, certificates are checked against the system's CAs); a URL that
turns certificate or host name checks off is refused.
"""

from __future__ import annotations

import os
import socket
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

if TYPE_CHECKING:  # jobs.readers imports pyarrow: not at every CLI start
    from jobs import InputLimits

#: ``ssl_cert_reqs`` values that turn certificate checks off (redis-py and kombu spellings).
_NO_CERT_CHECKS = {"none", "cert_none"}
#: Values redis-py and kombu read as false for ``ssl_check_hostname``.
_FALSE = {"0", "f", "false", "n", "no", "off"}


def _split(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.replace(os.pathsep, ",").split(",") if v.strip())


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    #: INFERQ_BROKER_URL (kept out of repr: it may hold the password)
    broker_url: str = field(default="redis://127.0.0.1:6379/0", repr=False)
    results: str = "results"                        #: INFERQ_RESULTS; "redis" = via Redis
    #: INFERQ_INPUTS: where submitted chunk inputs live (`jobs.inputs`): "redis", "results"
    #: (Parquet under the results root), or a path or pyarrow URI; "" = "results", or
    #: "redis" when results go through Redis
    inputs: str = ""
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
    #: LoadOptions.prefix_cache_tokens: KV cells kept for shared prompt prefixes between
    #: chunks (llama.cpp); 0 = half the context, -1 = off
    prefix_cache_tokens: int = 0
    max_rows: int = 10_000_000                      #: rows in one job's input
    max_prompt_bytes: int = 1_000_000               #: a longer prompt -> "prompt_too_large"
    max_input_bytes: int = 10 * 2**30               #: size of one job's input file
    #: INFERQ_FEED_DEPTH: chunks kept fed to a queue (on it or running) per live worker
    #: process consuming it (jobs/feeder.py); a new job waits about this many chunk-times
    feed_depth: int = 2
    #: INFERQ_FEED_LEASE_SECONDS: the feeder's lease; a dead lead's pass resumes
    #: elsewhere after it, and a claim not sent for this long is resent
    feed_lease_seconds: float = 15.0
    #: INFERQ_RETENTION_SECONDS: how long an ended job's state stays in Redis, recorded
    #: by each job when it is created (results on disk stay); 0 = until `inferq delete`
    retention_seconds: int = 7 * 24 * 3600

    def __post_init__(self) -> None:
        check_broker_url(self.broker_url)
        for name in ("max_rows", "max_prompt_bytes", "max_input_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be positive")
        if self.pool not in ("solo", "threads"):
            raise ValueError(f"pool={self.pool!r}: use solo or threads (engines are not "
                             "fork-safe)")
        if self.visibility_timeout <= self.chunk_time_limit:
            raise ValueError(f"visibility_timeout={self.visibility_timeout} must be above "
                             f"chunk_time_limit={self.chunk_time_limit}, or long chunks run twice")
        if self.retention_seconds < 0:
            raise ValueError(f"retention_seconds={self.retention_seconds} must be 0 (keep "
                             "ended jobs) or more")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.feed_depth < 1 or self.feed_lease_seconds <= 0:
            raise ValueError(f"feed_depth={self.feed_depth!r} must be at least 1 and "
                             f"feed_lease_seconds={self.feed_lease_seconds!r} positive")
        if self.inputs == "results" and self.results_via_redis:
            raise ValueError("inputs=results needs a results root shared by every worker, "
                             "but results=redis; use inputs=redis, or a URI every worker "
                             "reaches (s3://bucket/prefix)")

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

    def input_limits(self) -> InputLimits:
        """The bounds `inferq submit` applies to an input file."""
        from jobs import InputLimits

        return InputLimits(max_rows=self.max_rows, max_prompt_bytes=self.max_prompt_bytes,
                           max_total_bytes=self.max_input_bytes)

    @property
    def results_via_redis(self) -> bool:
        return self.results == "redis"

    def inputs_location(self) -> str:
        """What a job submitted from here records as its `JobSpec.inputs`: "" (Redis),
        "results" (under each process's own results root, where it writes the job's parts
        too: the same storage wherever it is mounted, /results in a container, a host path
        outside), or the absolute path or URI of another root. `ValueError` naming the
        setting otherwise."""
        from jobs.inputs import REDIS, RESULTS, check_location

        choice = self.inputs or ("redis" if self.results_via_redis else RESULTS)
        if choice == "redis":
            return REDIS
        if choice == RESULTS:
            return RESULTS
        if "://" in choice:
            return check_location(choice, where="INFERQ_INPUTS")
        return check_location(str(Path(choice).resolve()), where="INFERQ_INPUTS")

    def inputs_root(self) -> str | None:
        """The results root where jobs whose inputs are "results" keep them; None when
        this process's results go through Redis."""
        return None if self.results_via_redis else self.results_root()

    def results_root(self) -> str:
        """The results location for this process (a local path is made absolute)."""
        if self.results_via_redis or "://" in self.results:
            return self.results
        return str(Path(self.results).resolve())


def redact(url: str) -> str:
    """``url`` with its password (and any ``password=`` query value) replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:***@{host}" if colon else f"***@{host}"
    query = "&".join(f"{k}=***" if k.lower() == "password" else f"{k}={v}"
                     for k, v in parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def check_broker_url(url: str) -> None:
    """Refuse a ``rediss://`` URL that turns certificate or host name checks off.

    Every value of a repeated option counts: redis-py reads the first, kombu the last.
    """
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ValueError(f"broker_url is not a URL: {exc}") from exc
    if parts.scheme != "rediss":
        return
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        off = (key == "ssl_cert_reqs" and value.lower() in _NO_CERT_CHECKS) or (
            key == "ssl_check_hostname" and value.lower() in _FALSE)
        if off:
            raise ValueError(
                f"broker_url {redact(url)}: {key}={value} turns TLS certificate checks off, "
                "so anyone on the path can pose as Redis; use ssl_cert_reqs=required and "
                "ssl_ca_certs=/path/to/ca.pem for a private CA")


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
