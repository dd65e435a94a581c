"""``GET /metrics``: inferq's Prometheus metrics on the API server (`worker.metrics`).

Outside the OpenAI API's bearer keys, on purpose: those keys let their holder submit
and read batches, which a Prometheus server should not hold. The metrics carry no
prompt, row or key; they do name queues, models, workers and hosts. On a server
reachable beyond loopback, restrict ``/metrics`` where traffic enters (a network
policy, the ingress), or scrape `inferq exporter` on a private address instead.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """Computed from Redis now, off the event loop (a plain ``def`` runs in a thread)."""
    return Response(generate_latest(request.app.state.metrics),
                    media_type=CONTENT_TYPE_LATEST)
