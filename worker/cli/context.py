"""What every command shares: settings from the group's options, the client, failing
with an exit code, a JOB_ID argument, and one line (not a traceback) for a Redis error.

Exit codes: 0 success (a waited-for job completed); 1 the operation failed or the
job ended failed, expired or cancelled (or Redis cannot be reached); 2 bad usage or
input (invalid spec, bad input file, no worker can serve the job, a configuration
or Redis password that is refused, a broker URL that is not Redis); 141 standard
output was closed by its reader (``| head``).

Start-up time: redis, Celery (``worker.client``, ``worker.app``), the worker runtime
and matplotlib are imported where a command uses them, not at the top of a module:
together they would double the start of every command, ``--help`` included.
"""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
import sys
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

import click

from jobs import JOB_ID
from worker.config import Settings, redact

if TYPE_CHECKING:
    from worker.client import Client


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``inferq: message`` on stderr and exit with ``code``."""
    click.echo(f"inferq: {message}", err=True)
    sys.exit(code)


def leave(code: object) -> NoReturn:
    """Flush the standard streams and logging, then end the process with ``code`` (as
    `sys.exit` reads it: None is 0, a string is printed and is 1) without finalizing
    the interpreter (see `MainGroup`)."""
    if code is None:
        code = 0
    elif not isinstance(code, int):
        click.echo(str(code), err=True)
        code = 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe (`| head`)
            stream.flush()
    os._exit(code)


def stdout_closed() -> NoReturn:
    """End quietly when standard output's reader has gone (``inferq ... | head``): exit
    141, as a program killed by SIGPIPE; nothing more is written to the closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    leave(141)


def settings_of(ctx: click.Context, *, broker: bool = True) -> Settings:
    """The settings from the group's options and the environment, loaded once per run;
    ``broker`` False for a command that never reaches Redis (its URL is not checked)."""
    obj: dict[str, Any] = ctx.ensure_object(dict)
    if "settings" not in obj:
        try:
            obj["settings"] = Settings.load(obj.get("config"), broker_url=obj.get("broker_url"),
                                            results=obj.get("results"))
        except (OSError, ValueError) as exc:
            fail(f"configuration: {exc}", 2)
    settings: Settings = obj["settings"]
    if broker:
        check_broker_scheme(settings.broker_url)
    return settings


#: URL schemes of a Redis broker, as redis-py and Celery read them.
BROKER_SCHEMES = ("redis", "rediss", "unix")


def check_broker_scheme(url: str) -> None:
    """Exit 2 with one line unless ``url`` is a Redis URL."""
    scheme = urlsplit(url).scheme if "://" in url else ""
    if scheme not in BROKER_SCHEMES:
        fail(f"broker URL {redact(url)!r} is not a Redis URL; use "
             "redis://[:PASSWORD@]HOST:PORT/DB, rediss://... (TLS) or unix:///path/redis.sock "
             "(--broker-url, INFERQ_BROKER_URL or broker_url in --config)", 2)


def client_of(ctx: click.Context) -> Client:
    """A client (Redis store, results sink, Celery app) for the settings of this run."""
    from worker.client import Client  # on use: Celery and redis (start-up time)

    return Client(settings_of(ctx))


def check_job_id(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A JOB_ID argument: results paths are built from it, so never a path."""
    if not JOB_ID.match(value):
        raise click.BadParameter(f"{value!r} is not a valid job id (letters, digits, '_' "
                                 "and '-', at most 64)")
    return value


def redis_failure(url: str, exc: Exception) -> tuple[str, int]:
    """The message and exit code for a Redis error; the URL's password never shows."""
    import redis  # on use (start-up time)

    password = urlsplit(url).password or ""
    detail = str(exc).replace(password, "***") if password else str(exc)
    if isinstance(exc, redis.AuthenticationError):
        refusal = ("refused the password in the broker URL" if password else
                   "needs a password and the broker URL has none")
        return (f"Redis at {redact(url)} {refusal} ({detail}); set it in INFERQ_BROKER_URL "
                "or --broker-url as redis://:PASSWORD@host:port/db", 2)
    return f"cannot reach Redis at {redact(url)}: {detail}", 1


def check_broker(client: Any, url: str) -> None:
    """Fail now on a Redis that refuses us (password, TLS); wait for one that is down.

    A worker often starts before its Redis (compose, boot order, a restart): Celery
    waits for the broker (``broker_connection_retry_on_startup``), so a refused or
    timed-out connection only warns. Credentials or a certificate that are refused do
    not heal with time: they raise, and the command exits with the reason.
    """
    import redis  # on use (start-up time)

    try:
        client.ping()
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        if isinstance(exc, redis.AuthenticationError) or isinstance(exc.__context__,
                                                                    ssl.SSLError):
            raise
        click.echo(f"inferq: {redis_failure(url, exc)[0]}; waiting for it", err=True)


class MainGroup(click.Group):
    """The command group: a Redis error in any command is one line, not a traceback.

    Run as the console script (``__call__``), a command's process ends with
    `leave`, not with interpreter finalization: pyarrow's worker threads can still
    hold the last reference to a Python buffer (a Parquet part read from bytes) when
    the interpreter finalizes; releasing it needs the GIL, a thread that asks for the
    GIL during finalization is ended with ``pthread_exit``, and unwinding through
    Arrow's ``noexcept`` thread body calls ``std::terminate``: "terminate called
    without an active exception", exit 134, after the command had done its work.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        try:
            self.main(*args, **kwargs)
            code: object = 0
        except SystemExit as exc:
            code = exc.code
        leave(code)

    def invoke(self, ctx: click.Context) -> Any:
        import redis  # on use (start-up time)

        try:
            return super().invoke(ctx)
        except redis.RedisError as exc:
            obj = ctx.ensure_object(dict)
            url = obj["settings"].broker_url if "settings" in obj else obj.get("broker_url")
            fail(*redis_failure(url or "the broker URL", exc))
