"""jobs: the job domain, free of Celery (specs, readers, chunks, sinks, the store).

The names below are the package's public surface; `worker` imports them from here.
Chunk execution (`ChunkRunner`, `ChunkReport`), `RedisJobStore` and `reconcile` load
on first use, so that submitting a job never imports the engine-facing code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from jobs import keys
from jobs.errors import (
    DuplicateCustomId,
    InputFileError,
    InvalidJobSpec,
    JobError,
    JobNotFound,
    JobStateError,
)
from jobs.failures import PERMANENT, Decision, FailurePolicy, Verdict
from jobs.lifecycle import (
    ACTIVE,
    STATES,
    TERMINAL,
    ChunkStatus,
    ChunkSummary,
    JobState,
    JobStatus,
    finalize,
    manifest,
)
from jobs.readers import FORMATS, InputLimits, detect_format, read_input
from jobs.rows import InputRow
from jobs.spec import DEFAULT_CHUNK_SIZE, JOB_ID, JobSpec, options_from_dict, spec_from_document
from jobs.store import JobStore, MemoryJobStore
from jobs.submit import Enqueue, submit_job

if TYPE_CHECKING:
    from jobs.reconcile import ReconcileReport, reconcile
    from jobs.redis_store import RedisJobStore
    from jobs.runner import ChunkReport, ChunkRunner, ModelProvider

_LAZY = {
    "ChunkReport": "jobs.runner", "ChunkRunner": "jobs.runner", "ModelProvider": "jobs.runner",
    "RedisJobStore": "jobs.redis_store", "ReconcileReport": "jobs.reconcile",
    "reconcile": "jobs.reconcile",
}

__all__ = [
    "ACTIVE",
    "DEFAULT_CHUNK_SIZE",
    "FORMATS",
    "JOB_ID",
    "PERMANENT",
    "STATES",
    "TERMINAL",
    "ChunkReport",
    "ChunkRunner",
    "ChunkStatus",
    "ChunkSummary",
    "Decision",
    "DuplicateCustomId",
    "Enqueue",
    "FailurePolicy",
    "InputFileError",
    "InputLimits",
    "InputRow",
    "InvalidJobSpec",
    "JobError",
    "JobNotFound",
    "JobSpec",
    "JobState",
    "JobStateError",
    "JobStatus",
    "JobStore",
    "MemoryJobStore",
    "ModelProvider",
    "ReconcileReport",
    "RedisJobStore",
    "Verdict",
    "detect_format",
    "finalize",
    "keys",
    "manifest",
    "options_from_dict",
    "read_input",
    "reconcile",
    "spec_from_document",
    "submit_job",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'jobs' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
