"""``-`` as a file name: standard input for `inferq submit` and `inferq run`.

Submission reads its input twice (validate, then store), and Parquet needs a
seekable file, so standard input is first copied, 1 MiB at a time, to a temporary
file beside the results (``<results>/.incoming/``, or the system's temporary
directory when the results are not a local directory), with the input size limit
applied as it streams. The copy is removed once the job is submitted: a job read
from standard input records no input path, so `inferq reconcile` asks for one.

Without ``--format``, standard input is JSON lines when its first byte (after a
byte-order mark and blank space) is ``{``, Parquet when it starts with ``PAR1``;
anything else asks for ``--format``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from jobs import InputFileError, InputLimits
from worker.config import Settings

STDIN = "-"
#: How standard input is named in messages and in a job's ``input_name``.
STDIN_NAME = "stdin"
_CHUNK = 2**20


@contextmanager
def input_path(path: str, fmt: str | None, settings: Settings,
               stream: BinaryIO | None = None) -> Iterator[tuple[str, str | None]]:
    """``(path, fmt)`` to read: a file as it is, or standard input spooled to a
    temporary file (removed on exit) with its format found if ``fmt`` is None."""
    if path != STDIN:
        yield path, fmt
        return
    source = stream if stream is not None else sys.stdin.buffer
    if stream is None and sys.stdin.isatty():
        raise InputFileError(STDIN_NAME, "'-' reads standard input, which is a terminal; "
                             "pipe the input in, e.g. `cat reviews.csv | inferq submit "
                             "classify - --format csv ...`")
    limits = settings.input_limits()
    fd, spooled = tempfile.mkstemp(prefix="stdin-", suffix=".input", dir=_spool_dir(settings))
    try:
        with os.fdopen(fd, "wb") as out:
            _copy(source, out, limits)
        yield spooled, fmt or sniff_format(spooled)
    finally:
        os.unlink(spooled)


def _spool_dir(settings: Settings) -> str | None:
    """``<results>/.incoming`` for local results, else None (the system's temp dir)."""
    root = settings.results_root()
    if settings.results_via_redis or "://" in root:
        return None
    where = Path(root) / ".incoming"
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return str(where)


def _copy(source: BinaryIO, out: BinaryIO, limits: InputLimits) -> None:
    written = 0
    while chunk := source.read(_CHUNK):
        written += len(chunk)
        if written > limits.max_total_bytes:
            raise InputFileError(STDIN_NAME, f"more than {limits.max_total_bytes:,} bytes; "
                                 f"the limit is {limits.max_total_bytes:,} bytes a job: split "
                                 "the input into several jobs")
        out.write(chunk)


def sniff_format(path: str) -> str:
    """"jsonl" or "parquet" by a file's first bytes; `InputFileError` asking for
    ``--format`` otherwise."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith(b"PAR1"):
        return "parquet"
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if text.startswith(b"{"):
        return "jsonl"
    what = "is empty" if not text else "starts with neither a JSON object nor Parquet"
    raise InputFileError(STDIN_NAME, f"standard input {what}; without --format it is read "
                         "as JSON lines or Parquet: pass --format csv, --format text (or "
                         "jsonl, parquet)")


__all__ = ["STDIN", "STDIN_NAME", "input_path", "sniff_format"]
