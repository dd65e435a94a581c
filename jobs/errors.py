"""Errors of the job domain.

Hierarchy::

    JobError                              root: catch this for anything from jobs
    ├── InvalidJobSpec (ValueError)       a spec field is wrong; the message names it
    ├── InputFileError (ValueError)       the input file cannot be read as its format
    │                                     (names the file and the line or row)
    ├── DuplicateCustomId (ValueError)    two rows share a custom_id
    ├── InputLocationError (ValueError)   a place for chunk inputs that cannot be used
    │                                     (a bad setting, or one this process cannot reach)
    ├── JobNotFound (LookupError)         no job with that id
    │   └── ChunkInputMissing             the job's chunk input is not in the store
    └── JobStateError (RuntimeError)      the job is not in a state that allows this
"""

from __future__ import annotations


class JobError(Exception):
    """Root of every error raised by `jobs`."""


class InvalidJobSpec(JobError, ValueError):
    """A job spec field is invalid."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"invalid job spec: {field}: {message}")


class InputFileError(JobError, ValueError):
    """An input file that cannot be read; the job is rejected before anything is queued."""

    def __init__(self, path: str, message: str, *, line: int | None = None) -> None:
        self.path = path
        self.line = line
        where = f"{path}, line {line}" if line is not None else path
        super().__init__(f"{where}: {message}")


class DuplicateCustomId(JobError, ValueError):
    """Two input rows share a custom_id."""

    def __init__(self, path: str, custom_id: str, row: int) -> None:
        self.custom_id = custom_id
        self.row = row
        super().__init__(
            f"{path}: custom_id {custom_id!r} at row {row} appears earlier in the file; "
            "custom ids must be unique within a job"
        )


class InputLocationError(JobError, ValueError):
    """Chunk inputs cannot be kept, or read, where a setting or a job's spec says."""


class JobNotFound(JobError, LookupError):
    """No job with this id."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"no job {job_id!r}")


class ChunkInputMissing(JobNotFound):
    """A chunk's input rows are not in the store: dropped when its job ended, or lost."""

    def __init__(self, job_id: str, chunk: int, where: str = "the store") -> None:
        self.chunk = chunk
        super().__init__(job_id)
        self.args = (f"job {job_id!r} has no input for chunk {chunk} in {where}: inputs "
                     f"are dropped once a job ends, or were lost; `inferq reconcile "
                     f"{job_id}` stores them again from the job's input file",)


class JobStateError(JobError, RuntimeError):
    """The job's state does not allow the operation."""
