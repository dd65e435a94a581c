"""`inferq run`: a job in this process, without Redis or Celery, with the same outputs."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from jobs import ChunkRunner, JobSpec, JobStatus, MemoryJobStore, ParquetSink, submit_job
from jobs.mapping import InputMapping
from worker.catalog import Catalog, CatalogEntry
from worker.config import Settings
from worker.models import ModelCache
from worker.provenance import WorkerProvenance
from worker.runtime import usable_backends


def run_embedded(settings: Settings, spec: JobSpec, input_path: str, *,
                 fmt: str | None = None, model_path: str | None = None,
                 model_roots: Iterable[str] = (), mapping: InputMapping | None = None,
                 keep_path: bool = True,
                 on_progress: Callable[[JobStatus], None] = lambda s: None) -> JobStatus:
    """Submit and run every chunk here; the Parquet dataset is what workers would write."""
    roots = tuple(model_roots) or settings.model_roots
    catalog = Catalog.build(roots=roots, catalog_file=settings.catalog,
                            fake_models=settings.fake_models)
    if model_path:
        path = Path(model_path)
        fmt_of = "gguf" if path.suffix == ".gguf" else "safetensors"
        catalog.add(CatalogEntry(spec.model, fmt_of, str(path.resolve())))
    store = MemoryJobStore()
    sink = ParquetSink(settings.results_root() if not settings.results_via_redis else "results")
    models = ModelCache(catalog, usable_backends(settings), size=1)
    models.choose_backend(spec)  # fail before reading the input if nothing can serve it
    chunks: list[int] = []
    submit_job(spec, input_path, store, sink, lambda _job, chunk: chunks.append(chunk),
               fmt=fmt, limits=settings.input_limits(), mapping=mapping, keep_path=keep_path)
    runner = ChunkRunner(store, sink, models, worker="embedded",
                         max_attempts=settings.max_attempts,
                         provenance=WorkerProvenance(models,
                                                     parallel_slots=settings.parallel_slots))
    try:
        for chunk in chunks:
            runner.process(spec.job_id, chunk)
            on_progress(store.status(spec.job_id))
    finally:
        models.close()
    final = store.status(spec.job_id)
    on_progress(final)
    return final
