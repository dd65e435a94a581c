"""Every path under the results root, in one place: the whole layout on one screen.

Hive-partitioned by job (and evaluations by suite), so one glob reads every job::

    results/job=<id>/part-<chunk:06d>.parquet      result rows (RESULTS_SCHEMA)
    metrics/job=<id>/part-<chunk:06d>.parquet      one row of generation metrics
    inputs/job=<id>/part-<chunk:06d>.parquet       a chunk's input rows, until finalize
                                                   (jobs.inputs; a job's spec says whether
                                                   they are here, in Redis or elsewhere)
    jobs/<id>/spec.json                            the job spec (written at submit)
    jobs/<id>/manifest.json                        the job's closing record (finalize)
    evaluations/suite=<suite>/<job id>.parquet     a scored evaluation run
    .../.<name>.<random>.tmp                       a file being written (never read)

Paths here are relative to the root; a sink joins them to its own root. Nothing
else in inferq spells these templates.
"""

from __future__ import annotations

#: The kinds of part each chunk publishes.
KINDS = ("results", "metrics")
#: The JSON documents kept per job.
DOCUMENTS = ("spec.json", "manifest.json", "calibration.json")
EVALUATIONS = "evaluations"
INPUTS = "inputs"


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: use one of {KINDS}")
    return kind


def part_name(chunk: int) -> str:
    return f"part-{chunk:06d}.parquet"


def chunk_of(name: str) -> int | None:
    """The chunk a part's file name holds; None for any other name (temporaries)."""
    if name.startswith("part-") and name.endswith(".parquet") and name[5:11].isdigit():
        return int(name[5:11])
    return None


def part_dir(kind: str, job_id: str) -> str:
    return f"{check_kind(kind)}/job={job_id}"


def part(kind: str, job_id: str, chunk: int) -> str:
    return f"{part_dir(kind, job_id)}/{part_name(chunk)}"


def part_glob(kind: str = "results") -> str:
    """Every job's parts of ``kind``."""
    return f"{check_kind(kind)}/job=*/*.parquet"


def input_dir(job_id: str) -> str:
    """A job's chunk inputs (under the results root, or the root its spec names)."""
    return f"{INPUTS}/job={job_id}"


def chunk_input(job_id: str, chunk: int) -> str:
    return f"{input_dir(job_id)}/{part_name(chunk)}"


def document_dir(job_id: str) -> str:
    return f"jobs/{job_id}"


def document(job_id: str, name: str) -> str:
    return f"{document_dir(job_id)}/{name}"


def evaluations_dir(suite: str | None = None) -> str:
    """Every suite's evaluation runs, or one suite's."""
    return f"{EVALUATIONS}/suite={suite}" if suite else EVALUATIONS


def evaluation(suite: str, job_id: str) -> str:
    return f"{evaluations_dir(suite)}/{job_id}.parquet"


def temporary(directory: str, name: str, token: str) -> str:
    """A temporary name beside ``directory/name``: hidden, and ends in ``.tmp``."""
    return f"{directory}/.{name}.{token}.tmp"


def is_temporary(base_name: str) -> bool:
    return base_name.startswith(".") and base_name.endswith(".tmp")
