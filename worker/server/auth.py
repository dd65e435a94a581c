"""Bearer keys: ``Authorization: Bearer KEY``, one of ``INFERQ_API_KEYS``.

A wrong or missing key is 401 in OpenAI's error shape; keys are compared in constant
time. With no keys configured every request passes (the server then listens on
loopback only: `worker.cli.serve` refuses anything else).
"""

from __future__ import annotations

import hmac

from fastapi import Request

from worker.server.errors import APIError


def check_key(request: Request) -> None:
    """A FastAPI dependency: raises 401 unless the request carries a configured key."""
    keys: tuple[str, ...] = request.app.state.server.api_keys
    if not keys:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise APIError(401, "Missing API key: send Authorization: Bearer KEY (a key from "
                       "INFERQ_API_KEYS)", type="invalid_request_error", code="missing_api_key")
    # Compare against every key (no early exit): the time taken says nothing of which.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given.strip().encode(), key.encode())
    if not matched:
        raise APIError(401, "Incorrect API key provided", type="invalid_request_error",
                       code="invalid_api_key")
