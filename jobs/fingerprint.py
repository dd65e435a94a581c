"""An input file's fingerprint: its size and SHA-256, recorded in ``spec.json`` at submit.

`inferq reconcile` re-reads the input for the chunks that have no part, cutting it as
submission cut it. A file edited since (rows added, removed or changed) would put
other rows under the job's row numbers: rows of two files mixed in one job, or chunks
that no longer exist and never finish. `check_fingerprint` refuses such a file, naming
what differs; a ``spec.json`` written before fingerprints were recorded is not checked.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from jobs.errors import InputFileError

#: ``spec.json`` fields of the fingerprint.
SIZE, SHA256 = "input_size", "input_sha256"
_BLOCK = 1 << 20


def fingerprint(path: str) -> dict[str, Any]:
    """``{"input_size": bytes, "input_sha256": hex}`` of the file at ``path``."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
            size += len(block)
    return {SIZE: size, SHA256: digest.hexdigest()}


def check_fingerprint(spec_doc: dict[str, Any], path: str) -> None:
    """`InputFileError` unless the file at ``path`` is the one ``spec_doc`` was submitted
    from (the size first: it costs no read)."""
    if SHA256 not in spec_doc:
        return
    job = spec_doc.get("job_id", "?")
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise InputFileError(path, f"cannot read job {job}'s input: {exc.strerror or exc}"
                             ) from exc
    if size != spec_doc[SIZE]:
        raise InputFileError(path, f"is not the input job {job} was submitted from: "
                             f"size {size:,} bytes, expected {spec_doc[SIZE]:,} (spec.json); "
                             "pass the original file with --input")
    found = fingerprint(path)[SHA256]
    if found != spec_doc[SHA256]:
        raise InputFileError(path, f"is not the input job {job} was submitted from: "
                             f"sha256 {found}, expected {spec_doc[SHA256]} (spec.json); "
                             "pass the original file with --input")
