"""jobs: the job domain, free of Celery (specs, readers, chunks, sinks, the store)."""

from jobs.errors import (
    DuplicateCustomId,
    InputFileError,
    InvalidJobSpec,
    JobError,
    JobNotFound,
    JobStateError,
)
from jobs.readers import FORMATS, InputLimits, detect_format, read_input
from jobs.rows import InputRow
from jobs.spec import JobSpec

__all__ = [
    "FORMATS",
    "DuplicateCustomId",
    "InputFileError",
    "InputLimits",
    "InputRow",
    "InvalidJobSpec",
    "JobError",
    "JobNotFound",
    "JobSpec",
    "JobStateError",
    "detect_format",
    "read_input",
]
