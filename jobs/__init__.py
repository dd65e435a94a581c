"""jobs: the job domain, free of Celery (specs, readers, chunks, sinks, the store).

The names below are the package's public surface; `worker` imports them from here.
Chunk execution (`ChunkRunner`, `ChunkReport`), `RedisJobStore` and `reconcile` load
on first use, so that submitting a job never imports the engine-facing code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from jobs import keys, layout
from jobs.errors import (
    DuplicateCustomId,
    InputFileError,
    InvalidJobSpec,
    JobError,
    JobNotFound,
    JobStateError,
)
from jobs.evaluate import read_evaluations
from jobs.failures import PERMANENT, Decision, FailurePolicy, Verdict, isolation_budget
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
from jobs.rows import PAYLOAD_VERSION, InputRow
from jobs.schema import (
    EVALUATIONS_SCHEMA,
    METRICS_SCHEMA,
    RESULTS_SCHEMA,
    SCHEMA_VERSION,
    MetricRow,
    ResultRow,
)
from jobs.sinks import EvaluationSink, ParquetSink, PartSink, RedisPartSink, encode_table
from jobs.spec import DEFAULT_CHUNK_SIZE, JOB_ID, JobSpec, options_from_dict, spec_from_document
from jobs.store import JobStore, MemoryJobStore
from jobs.submit import Enqueue, submit_job
from jobs.suites import Suite, SuiteError, load_suites

if TYPE_CHECKING:
    from jobs.execute import DEFAULT_BATCH
    from jobs.reconcile import ReconcileReport, reconcile_job
    from jobs.redis_store import RedisJobStore
    from jobs.runner import ChunkReport, ChunkRunner, ModelProvider

_LAZY = {
    "DEFAULT_BATCH": "jobs.execute",
    "ChunkReport": "jobs.runner", "ChunkRunner": "jobs.runner", "ModelProvider": "jobs.runner",
    "RedisJobStore": "jobs.redis_store", "ReconcileReport": "jobs.reconcile",
    "reconcile_job": "jobs.reconcile",
}

__all__ = [
    "ACTIVE",
    "DEFAULT_BATCH",
    "DEFAULT_CHUNK_SIZE",
    "EVALUATIONS_SCHEMA",
    "FORMATS",
    "JOB_ID",
    "METRICS_SCHEMA",
    "PAYLOAD_VERSION",
    "PERMANENT",
    "RESULTS_SCHEMA",
    "SCHEMA_VERSION",
    "STATES",
    "TERMINAL",
    "ChunkReport",
    "ChunkRunner",
    "ChunkStatus",
    "ChunkSummary",
    "Decision",
    "DuplicateCustomId",
    "Enqueue",
    "EvaluationSink",
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
    "MetricRow",
    "ModelProvider",
    "ParquetSink",
    "PartSink",
    "ReconcileReport",
    "RedisJobStore",
    "RedisPartSink",
    "ResultRow",
    "Suite",
    "SuiteError",
    "Verdict",
    "detect_format",
    "encode_table",
    "finalize",
    "isolation_budget",
    "keys",
    "layout",
    "load_suites",
    "manifest",
    "options_from_dict",
    "read_evaluations",
    "read_input",
    "reconcile_job",
    "spec_from_document",
    "submit_job",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'jobs' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
