"""Queue names: how a chunk reaches exactly the workers that can run it.

``inferq.model.<id>``       any backend that has the model
``inferq.<backend>.<id>``   a job pinned to a backend
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from jobs import JobSpec

PREFIX = "inferq"


def model_queue(model_id: str) -> str:
    return f"{PREFIX}.model.{model_id}"


def backend_queue(backend: str, model_id: str) -> str:
    return f"{PREFIX}.{backend}.{model_id}"


def queue_for(spec: JobSpec) -> str:
    """The queue a job's chunks go to."""
    return backend_queue(spec.backend, spec.model) if spec.backend else model_queue(spec.model)


def worker_queues(served: Mapping[str, Iterable[str]]) -> list[str]:
    """Every queue a worker consumes, from model id -> backends that serve it here."""
    queues = []
    for model_id in sorted(served):
        backends = sorted(served[model_id])
        if backends:
            queues.append(model_queue(model_id))
            queues.extend(backend_queue(b, model_id) for b in backends)
    return queues
