"""JSON over HTTP for the ``http`` backend: timeouts, retries, server-sent events.

Standard library only. Every request opens its own connection (so the client is
safe to share between threads) and closes it when done. A request is retried,
with exponential backoff, on connection errors, timeouts, 429 and 5xx; any other
error status fails at once. A stream is retried only until its response
headers arrive: once tokens flow, a failure is final, since retrying would
repeat them.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Generator, Iterator
from typing import Any
from urllib.parse import SplitResult

from inference.errors import GenerationError

JsonObject = dict[str, Any]


class HttpStatusError(GenerationError):
    """The server answered with an error status.

    ``message`` is the server's own words, ``detail`` the whole error body.
    """

    def __init__(self, url: str, status: int, message: str, detail: str = "") -> None:
        self.url = url
        self.status = status
        self.message = message
        self.detail = detail or message
        super().__init__(f"{url}: HTTP {status}: {message}")


class ServerUnreachable(GenerationError):
    """No answer at all: the connection failed or timed out, after every attempt."""


class JsonClient:
    """Requests to one server's API, below ``base`` (scheme, host, port, path)."""

    def __init__(
        self,
        base: SplitResult,
        *,
        api_key: str = "",
        connect_timeout: float = 10.0,
        timeout: float = 60.0,
        attempts: int = 3,
        backoff: float = 0.5,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts={attempts!r}: must be at least 1")
        self._base = base
        self._prefix = base.path.rstrip("/")
        self._api_key = api_key
        self._headers = {"Accept": "application/json, text/event-stream"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self.connect_timeout = connect_timeout
        self.timeout = timeout     #: seconds to wait for each read of the response
        self.attempts = attempts
        self.backoff = backoff     #: first retry's delay; doubles with each attempt

    def below(self, path: str) -> JsonClient:
        """The same server and settings, with ``path`` as the base path."""
        return JsonClient(self._base._replace(path=path), api_key=self._api_key,
                          connect_timeout=self.connect_timeout, timeout=self.timeout,
                          attempts=self.attempts, backoff=self.backoff)

    def url(self, path: str) -> str:
        return f"{self._base.scheme}://{self._base.netloc}{self._prefix}{path}"

    def get(self, path: str) -> JsonObject:
        return self._call("GET", path, None)

    def post(self, path: str, body: JsonObject) -> JsonObject:
        return self._call("POST", path, body)

    def stream(self, path: str, body: JsonObject) -> Generator[JsonObject, None, None]:
        """POST ``body``; yield each server-sent event's JSON until ``[DONE]``."""
        conn, resp = self._open("POST", path, body)
        try:
            for data in _sse_data(resp):
                if data.strip() == "[DONE]":
                    return
                event = _decode(self.url(path), data.encode())
                if "error" in event:
                    raise GenerationError(f"{self.url(path)}: {error_message(event)}")
                yield event
        except (OSError, http.client.HTTPException) as exc:
            raise GenerationError(f"{self.url(path)}: stream broken: {self._reason(exc)}") from exc
        finally:
            resp.close()
            conn.close()

    def _call(self, method: str, path: str, body: JsonObject | None) -> JsonObject:
        conn, resp = self._open(method, path, body)
        try:
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise ServerUnreachable(f"{self.url(path)}: {self._reason(exc)}") from exc
        finally:
            resp.close()
            conn.close()
        return _decode(self.url(path), raw)

    def _open(
        self, method: str, path: str, body: JsonObject | None
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send the request until a success status arrives, retrying what may pass."""
        url = self.url(path)
        headers = dict(self._headers)
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in range(1, self.attempts + 1):
            tries = f" (attempt {attempt} of {self.attempts})" if attempt > 1 else ""
            try:
                conn, resp = self._send(method, path, payload, headers)
            except (OSError, http.client.HTTPException) as exc:
                if attempt == self.attempts:
                    raise ServerUnreachable(f"{url}: {self._reason(exc)}{tries}") from exc
                self._sleep(attempt, None)
                continue
            if resp.status < 400:
                return conn, resp
            raw = resp.read()
            resp.close()
            conn.close()
            retryable = resp.status == 429 or resp.status >= 500
            if attempt == self.attempts or not retryable:
                detail = raw.decode("utf-8", "replace")[:2000]
                message = _error_text(raw, resp.reason) + tries
                raise HttpStatusError(url, resp.status, message, detail)
            self._sleep(attempt, resp.getheader("Retry-After"))
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(
        self, method: str, path: str, payload: bytes | None, headers: dict[str, str]
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        conn = self._connection()
        try:
            conn.request(method, self._prefix + path, body=payload, headers=headers)
            return conn, conn.getresponse()
        except BaseException:
            conn.close()
            raise

    def _connection(self) -> http.client.HTTPConnection:
        host, port = self._base.hostname or "", self._base.port
        cls = http.client.HTTPSConnection if self._base.scheme == "https" else (
            http.client.HTTPConnection)
        conn = cls(host, port, timeout=self.connect_timeout)
        try:
            conn.connect()
        except BaseException:
            conn.close()
            raise
        if conn.sock is not None:
            conn.sock.settimeout(self.timeout)
        return conn

    def _sleep(self, attempt: int, retry_after: str | None) -> None:
        delay = self.backoff * 2 ** (attempt - 1)
        if retry_after and retry_after.isdigit():
            delay = max(delay, min(float(retry_after), 30.0))
        time.sleep(delay)

    def _reason(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError):
            return f"timed out (timeout {self.timeout:g} s, connect {self.connect_timeout:g} s)"
        return str(exc) or type(exc).__name__


def error_message(body: JsonObject) -> str:
    """The message in an OpenAI-style error body, or the body itself."""
    error = body.get("error", body.get("detail", body))
    if isinstance(error, dict):
        return str(error.get("message", error))
    return str(error)


def _error_text(raw: bytes, reason: str) -> str:
    try:
        body = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace").strip()[:500] or reason
    return error_message(body) if isinstance(body, dict) else str(body)


def _decode(url: str, raw: bytes) -> JsonObject:
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise GenerationError(f"{url}: the server's answer is not JSON: {raw[:200]!r}") from exc
    if not isinstance(value, dict):
        raise GenerationError(f"{url}: expected a JSON object, got {raw[:200]!r}")
    return value


def _sse_data(resp: http.client.HTTPResponse) -> Iterator[str]:
    """The data of each server-sent event (``data:`` lines joined; comments skipped)."""
    lines: list[str] = []
    for raw in resp:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if lines:
                yield "\n".join(lines)
                lines = []
        elif line.startswith("data:"):
            value = line[5:]
            lines.append(value[1:] if value.startswith(" ") else value)
    if lines:
        yield "\n".join(lines)
