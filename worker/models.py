"""The worker's model cache: models load on first use and stay loaded (LRU by count)."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import replace

import inference
from inference import LoadOptions, ModelLoadError, TextModel
from jobs import JobSpec
from worker.catalog import Catalog

log = logging.getLogger("inferq.models")

GPU_BACKENDS = {"metal": "metal", "rocm": "rocm", "cuda": "cuda"}
#: Seconds a failed load is remembered: later chunks fail at once instead of reloading.
FAILED_LOAD_MEMORY = 300.0


class ModelCache:
    """Chooses the backend for a job and keeps up to ``size`` models loaded."""

    def __init__(self, catalog: Catalog, backends: list[str], *, size: int = 2,
                 load_options: LoadOptions | None = None) -> None:
        self.catalog = catalog
        self.backends = backends  # available here, in preference order
        self.size = size
        self.load_options = load_options or LoadOptions()
        self._models: OrderedDict[tuple[str, str], TextModel] = OrderedDict()
        self._failed: dict[tuple[str, str], tuple[float, ModelLoadError]] = {}
        self._paths: dict[tuple[str, str], str] = {}  #: what each loaded model loaded from
        self._lock = threading.Lock()

    def choose_backend(self, spec: JobSpec) -> str:
        served = self.catalog.served(self.backends).get(spec.model, [])
        if spec.backend:
            if spec.backend not in served:
                raise ModelLoadError(spec.model, f"this worker cannot serve it on backend "
                                     f"{spec.backend!r} (it can on: {', '.join(served) or 'none'})")
            return spec.backend
        if not served:
            raise ModelLoadError(spec.model, "this worker has no such model in its catalog")
        preferred = [b for b in self.backends if b in served]
        return preferred[0]

    def __call__(self, spec: JobSpec) -> tuple[TextModel, str, str]:
        """(model, backend, device) for ``spec``; loads it on first use."""
        backend = self.choose_backend(spec)
        key = (spec.model, backend)
        with self._lock:
            model = self._models.get(key)
            if model is not None:
                self._models.move_to_end(key)
                return model, backend, GPU_BACKENDS.get(backend, "cpu")
            failed = self._failed.get(key)
            if failed and time.monotonic() - failed[0] < FAILED_LOAD_MEMORY:
                raise failed[1]  # fail fast: no retry storm against a broken model file
            entry = self.catalog.entry_for(spec.model, backend)
            if entry is None:
                raise ModelLoadError(spec.model, f"no file for backend {backend!r}")
            log.info("loading %s on %s from %s", spec.model, backend, entry.path)
            try:
                model = inference.get(backend).load_model(
                    entry.path, replace(self.load_options, backend=backend))
            except ModelLoadError as exc:
                self._failed[key] = (time.monotonic(), exc)
                raise
            self._models[key] = model
            self._paths[key] = entry.path
            while len(self._models) > self.size:
                _, evicted = self._models.popitem(last=False)
                evicted.close()
            return model, backend, GPU_BACKENDS.get(backend, "cpu")

    def path_of(self, model_id: str, backend: str) -> str:
        """The file, directory or URL ``model_id`` was loaded from on ``backend``; "" if
        it was not loaded here."""
        with self._lock:
            return self._paths.get((model_id, backend), "")

    def loaded(self) -> list[str]:
        with self._lock:
            return [f"{m}@{b}" for m, b in self._models]

    def close(self) -> None:
        with self._lock:
            for model in self._models.values():
                model.close()
            self._models.clear()
