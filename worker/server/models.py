"""Models: the ones live workers advertise, as OpenAI model objects."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from worker.server.auth import check_key
from worker.server.errors import not_found

router = APIRouter(dependencies=[Depends(check_key)])


def _served(request: Request) -> list[str]:
    served: list[str] = request.app.state.batches.models()
    return served


def _model(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "inferq"}


@router.get("/v1/models")
def list_models(request: Request) -> dict[str, Any]:
    return {"object": "list", "data": [_model(m) for m in _served(request)]}


@router.get("/v1/models/{model_id}")
def retrieve_model(request: Request, model_id: str) -> dict[str, Any]:
    if model_id not in _served(request):
        raise not_found("model", model_id)
    return _model(model_id)
