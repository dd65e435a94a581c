"""The provenance a worker stamps on each chunk (`jobs.provenance.Provenance`).

The engine is the model's own word when it has one (`inference.model.EngineReporter`:
the ``http`` backend asks its server), else the installed distribution behind the
backend (llama-cpp-python for ``llama_cpp``/``rocm``/``cuda``, mlx-lm for
``mlx``/``metal``). The model file's size and SHA-256 come from the digest cache
(`worker.digest`: hashed once per file per machine), looked up once per loaded model.
"""

from __future__ import annotations

import threading
from importlib.metadata import PackageNotFoundError, version

from inference import TextModel
from inference.model import EngineReporter
from jobs import JobSpec
from jobs.provenance import Provenance
from worker.digest import DigestCache
from worker.models import ModelCache

#: The distribution that runs each local backend.
DISTRIBUTIONS = {"llama_cpp": "llama-cpp-python", "rocm": "llama-cpp-python",
                 "cuda": "llama-cpp-python", "mlx": "mlx-lm", "metal": "mlx-lm"}


def installed(distribution: str) -> str:
    """``distribution``'s installed version, "" when it is not installed."""
    try:
        return version(distribution)
    except PackageNotFoundError:
        return ""


def engine_of(model: TextModel, backend: str) -> tuple[str, str]:
    """(engine, version) that runs ``model`` on ``backend``; ("", "") when unknown."""
    if isinstance(model, EngineReporter):
        return model.engine()
    distribution = DISTRIBUTIONS.get(backend, "")
    return (distribution, installed(distribution)) if distribution else ("", "")


class WorkerProvenance:
    """`jobs.runner.ProvenanceOf` for a worker's `ModelCache`: one `Provenance` per loaded
    model, built on its first chunk (the only time its file is digested, if ever)."""

    def __init__(self, models: ModelCache, digests: DigestCache | None = None, *,
                 parallel_slots: int = 0) -> None:
        self.models = models
        self.digests = digests or DigestCache()
        self.parallel_slots = parallel_slots
        self.inferq_version = installed("inferq")
        self._known: dict[tuple[str, str], tuple[TextModel, Provenance]] = {}
        self._lock = threading.Lock()

    def __call__(self, spec: JobSpec, model: TextModel, backend: str) -> Provenance:
        key = (spec.model, backend)
        with self._lock:
            known = self._known.get(key)
            if known is not None and known[0] is model:
                return known[1]
            path = self.models.path_of(spec.model, backend)
            digest = self.digests.digest(path)
            engine, engine_version = engine_of(model, backend)
            provenance = Provenance(
                engine=engine, engine_version=engine_version, model_path=path,
                model_size_bytes=digest.size, model_sha256=digest.sha256,
                inferq_version=self.inferq_version, parallel_slots=self.parallel_slots,
                context_len=model.info().context_len)
            self._known[key] = (model, provenance)
            return provenance
