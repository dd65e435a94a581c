"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

Raise `APIError` anywhere in a route; `install` turns it, Starlette's own HTTP
errors, invalid request bodies (400) and an unreachable Redis (503, the client
retries) into that shape with the status code.
"""

from __future__ import annotations

from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException


class APIError(Exception):
    """An error answered to the client: status, message, and OpenAI's type and code."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message = status, message
        self.type, self.code, self.param = type, code, param

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


def not_found(what: str, ident: str) -> APIError:
    return APIError(404, f"No such {what}: {ident!r}", code="not_found")


def bad_request(message: str, *, code: str = "invalid_request", param: str | None = None
                ) -> APIError:
    return APIError(400, message, code=code, param=param)


def _answer(error: APIError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` in OpenAI's shape."""

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return _answer(exc)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _answer(APIError(exc.status_code, str(exc.detail), code=None))

    @app.exception_handler(redis.RedisError)
    async def redis_down(request: Request, exc: redis.RedisError) -> JSONResponse:
        return _answer(APIError(503, f"Redis cannot be reached: {type(exc).__name__}; "
                                "retry shortly", type="server_error",
                                code="service_unavailable"))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return _answer(APIError(400, f"{param or 'request'}: {first.get('msg', 'invalid')}",
                                code="invalid_request", param=param))
