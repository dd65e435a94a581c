"""Where a job's chunk inputs live, and the one place that reads, writes and drops them.

A job's spec records the place (`JobSpec.inputs`), so every process reads a job's
inputs from where its submitter put them, whatever its own settings say:

    ""          Redis: ``inferq:job:<id>:input:<chunk>``, zlib JSON (`jobs.rows`' payload).
                Every job before this setting, and deployments whose results go
                through Redis because workers share no storage.
    "results"   Parquet files ``inputs/job=<id>/part-<chunk>.parquet`` under the results
                root of the process that reads them, where it writes the job's parts
                too: the default when results go to shared storage. The spec names no
                path, so a host directory and a container's ``/results`` mount of the
                same volume agree.
    a location  the same files under that absolute path or pyarrow filesystem URI
                (``s3://bucket/prefix?endpoint_override=host:port&scheme=http``).

Off Redis, Redis keeps state only: a 10M-row job of 1 KB prompts no longer puts
gigabytes in its memory. The Parquet columns are `InputRow`'s fields, so the files are
readable by any Parquet tool; ``options`` (a row's own request options) is JSON, as in
the Redis payload.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import uuid
import zlib
from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from inference import Message
from jobs import keys, layout
from jobs.errors import ChunkInputMissing, InputLocationError
from jobs.rows import InputRow, decode_chunk, encode_chunk

__all__ = ["INPUT_SCHEMA", "REDIS", "RESULTS", "ChunkInputs", "ParquetInputs", "RedisInputs",
           "check_location", "inputs_at", "rows_from_table", "rows_to_table"]

REDIS = ""            #: `JobSpec.inputs`: in Redis
RESULTS = "results"   #: `JobSpec.inputs`: under the reading process's results root
#: The version of the Parquet input files this inferq writes (schema metadata).
FILE_VERSION = 1
_VERSION_KEY = b"inferq.inputs.version"
#: Query parameters of a pyarrow URI that carry secrets: never recorded in a spec.
_SECRETS = {"access_key", "secret_key", "session_token"}

#: Chunk files are written once and read whole by one worker: no statistics or
#: dictionaries to skip row groups by (a third faster, and a third smaller, at 256 rows).
WRITE_OPTIONS: dict[str, Any] = {"compression": "zstd", "write_statistics": False,
                                 "use_dictionary": False}
_MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
INPUT_SCHEMA = pa.schema([
    ("index", pa.int64()), ("custom_id", pa.string()), ("prompt", pa.string()),
    ("messages", pa.list_(_MESSAGE)), ("error_code", pa.string()),
    ("error_message", pa.string()), ("expected", pa.string()),
    ("options", pa.string()),  # JSON of the row's own GenerateOptions fields
    ("model", pa.string()),
], metadata={_VERSION_KEY: str(FILE_VERSION).encode()})


class ChunkInputs(Protocol):
    """One place chunk inputs live. Every method is safe to call twice."""

    def put(self, job_id: str, chunk: int, rows: Sequence[InputRow]) -> None:
        """Store a chunk's rows whole, replacing any (a reconcile stores them again)."""
        ...

    def get(self, job_id: str, chunk: int) -> list[InputRow]:
        """A chunk's rows; `ChunkInputMissing` (a `JobNotFound`) when they were never
        stored, or dropped."""
        ...

    def drop(self, job_id: str, chunks: int) -> None:
        """Delete the inputs of chunks ``0 .. chunks - 1`` of a job (none there is fine)."""
        ...


class RedisInputs:
    """Chunk inputs as zlib-compressed JSON strings in Redis."""

    def __init__(self, client: Any) -> None:
        self.redis = client

    def put(self, job_id: str, chunk: int, rows: Sequence[InputRow]) -> None:
        payload = zlib.compress(json.dumps(encode_chunk(rows)).encode(), 1)
        self.redis.set(keys.chunk_input(job_id, chunk), payload)

    def get(self, job_id: str, chunk: int) -> list[InputRow]:
        payload: Any = self.redis.get(keys.chunk_input(job_id, chunk))
        if payload is None:
            raise ChunkInputMissing(job_id, chunk, "Redis")
        return decode_chunk(json.loads(zlib.decompress(payload)))

    def drop(self, job_id: str, chunks: int) -> None:
        if chunks:
            self.redis.delete(*(keys.chunk_input(job_id, c) for c in range(chunks)))


class ParquetInputs:
    """Chunk inputs as Parquet files under a root: a local path or a pyarrow URI."""

    def __init__(self, root: str) -> None:
        if "://" in root:
            self.fs, self.root = pafs.FileSystem.from_uri(root)
        else:
            self.fs, self.root = pafs.LocalFileSystem(), os.path.abspath(root)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        #: Object stores write an object whole or not at all: no temporary name needed.
        self.atomic_writes = self.fs.type_name in ("s3", "gcs")

    def path(self, job_id: str, chunk: int) -> str:
        return f"{self.root}/{layout.chunk_input(job_id, chunk)}"

    def put(self, job_id: str, chunk: int, rows: Sequence[InputRow]) -> None:
        buffer = io.BytesIO()
        pq.write_table(rows_to_table(rows), buffer, **WRITE_OPTIONS)
        final = self.path(job_id, chunk)
        if self.atomic_writes:
            with self.fs.open_output_stream(final) as out:
                out.write(buffer.getvalue())
            return
        directory = final.rsplit("/", 1)[0]
        self.fs.create_dir(directory, recursive=True)
        tmp = layout.temporary(directory, layout.part_name(chunk), uuid.uuid4().hex)
        try:
            with self.fs.open_output_stream(tmp) as out:
                out.write(buffer.getvalue())
            if self.local:
                os.replace(tmp, final)
            else:
                self.fs.move(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                self.fs.delete_file(tmp)
            raise

    def get(self, job_id: str, chunk: int) -> list[InputRow]:
        try:
            with self.fs.open_input_file(self.path(job_id, chunk)) as f:
                data = f.read()
        except FileNotFoundError:
            if self.local and not os.path.isdir(self.root):  # not dropped: never seen here
                raise InputLocationError(
                    f"the job's chunk inputs are under {self.root}, which does not exist on "
                    "this machine: mount the shared results root at the same path as the "
                    "submitter's, or submit with INFERQ_INPUTS set to a URI every worker "
                    "reaches (s3://bucket/prefix)") from None
            raise ChunkInputMissing(job_id, chunk, self.path(job_id, chunk)) from None
        return rows_from_table(pq.ParquetFile(pa.BufferReader(data)).read(use_threads=False))

    def drop(self, job_id: str, chunks: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_dir(f"{self.root}/{layout.input_dir(job_id)}")


def rows_to_table(rows: Sequence[InputRow]) -> pa.Table:
    """A chunk's rows as an `INPUT_SCHEMA` table: every `InputRow` field, one column each."""
    return pa.table({
        "index": [r.index for r in rows], "custom_id": [r.custom_id for r in rows],
        "prompt": [r.prompt for r in rows],
        "messages": [[{"role": m.role, "content": m.content} for m in r.messages]
                     if r.messages else None for r in rows],
        "error_code": [r.error_code for r in rows],
        "error_message": [r.error_message for r in rows],
        "expected": [r.expected for r in rows],
        "options": [json.dumps(dict(r.options)) if r.options else None for r in rows],
        "model": [r.model for r in rows],
    }, schema=INPUT_SCHEMA)


def rows_from_table(table: pa.Table) -> list[InputRow]:
    """The rows of a table `rows_to_table` wrote; a file version this inferq does not
    know gives one ``unsupported_payload`` error row per row, as `jobs.rows` does."""
    version = (table.schema.metadata or {}).get(_VERSION_KEY, b"?").decode()
    if version != str(FILE_VERSION):
        message = (f"chunk input file version {version!r} is unknown to this worker (it "
                   f"reads version {FILE_VERSION}); upgrade inferq on this worker")
        return [InputRow(index=i, custom_id=str(c), error_code="unsupported_payload",
                         error_message=message)
                for i, c in zip(table.column("index").to_pylist(),
                                table.column("custom_id").to_pylist(), strict=True)]
    return [InputRow(index=r["index"], custom_id=r["custom_id"], prompt=r["prompt"],
                     messages=tuple(Message(m["role"], m["content"]) for m in r["messages"])
                     if r["messages"] else None,
                     error_code=r["error_code"], error_message=r["error_message"],
                     expected=r["expected"],
                     options=json.loads(r["options"]) if r["options"] else None,
                     model=r["model"])
            for r in table.to_pylist()]


def check_location(location: object, *, where: str = "inputs") -> str:
    """``location`` if it can be recorded in a spec: "", "results", an absolute path or a
    URI without credentials (they belong in the environment: a spec is stored in Redis
    and in ``spec.json``). `InputLocationError` naming ``where`` otherwise."""
    if not isinstance(location, str):
        raise InputLocationError(f"{where}={location!r}: expected a string")
    if location in (REDIS, RESULTS):
        return location
    if "://" in location:
        secrets = sorted(k for k, _ in parse_qsl(urlsplit(location).query) if k in _SECRETS)
        if secrets:
            raise InputLocationError(
                f"{where}: the URI holds {', '.join(secrets)}; give credentials in the "
                "environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), never in the URI, "
                "which every job's spec records")
        return location
    if not os.path.isabs(location):
        raise InputLocationError(f"{where}={location!r}: use 'redis', 'results', an absolute "
                                 "path or a URI (s3://bucket/prefix)")
    return location


def inputs_at(location: str, *, redis: Any, results_root: str | None) -> ChunkInputs:
    """The `ChunkInputs` of a job whose spec says ``location``. ``results_root`` is this
    process's results location (None: its results go through Redis)."""
    if location == REDIS:
        return RedisInputs(redis)
    if location == RESULTS:
        if results_root is None:
            raise InputLocationError(
                "the job's inputs are under the results root, but this process keeps "
                "results in Redis (INFERQ_RESULTS=redis); point INFERQ_RESULTS at the "
                "shared results root the submitter uses")
        return ParquetInputs(results_root)
    return ParquetInputs(check_location(location))
