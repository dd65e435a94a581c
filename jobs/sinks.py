"""Where results go: parts, documents and evaluation runs, each written once.

`PartSink` is the contract every sink keeps: parts addressed by ``(job id, chunk
index, kind)``, already encoded; JSON documents per job (``spec.json``,
``manifest.json``). `EvaluationSink` is the optional capability of a sink that also
holds the evaluations dataset and can read a job's results back (a results root
on a filesystem). The paths under a results root are `jobs.layout`'s.

A part is written to a temporary name and published without clobbering: on a
local disk by ``link()``, which fails if the name exists, so the first writer
wins and a redelivered chunk finds its part and skips. Other filesystems check
for the name before a rename; the Redis store's set membership still counts
each chunk once.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import uuid
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from jobs import keys, layout
from jobs.layout import KINDS, part_name
from jobs.schema import EVALUATIONS_SCHEMA, RESULTS_SCHEMA

__all__ = ["KINDS", "EvaluationSink", "ParquetSink", "PartSink", "RedisPartSink",
           "encode_table", "part_name"]


#: How parts held as Python bytes are read: on this thread. A pyarrow pool thread still
#: holding such a buffer when the interpreter exits asks for the interpreter lock, is
#: ended, and aborts the process (exit 134); parts are small, threads gain nothing.
SINGLE_THREADED: dict[str, bool] = {"use_threads": False, "pre_buffer": False}


def encode_table(table: pa.Table) -> bytes:
    """A table as Parquet bytes (zstd), for disk or for Redis."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


class PartSink(Protocol):
    """Stores each chunk's parts once. Sinks see encoded parts and a (job, chunk) address."""

    def has_part(self, job_id: str, chunk: int, kind: str = "results") -> bool:
        """Whether the part of ``kind`` (``results`` or ``metrics``) is published."""
        ...

    def put_part(self, job_id: str, chunk: int, kind: str, data: bytes) -> bool:
        """Publish ``data`` unless the part exists; True if this call published it."""
        ...

    def read_part(self, job_id: str, chunk: int, kind: str = "results") -> bytes:
        """A published part's bytes; `FileNotFoundError` if it was never published."""
        ...

    def replace_part(self, job_id: str, chunk: int, kind: str, data: bytes) -> bool:
        """Swap a published part for ``data`` in one step (readers see the old part or
        the new, never a mix); False when there is no such part here. Only for a
        rewrite that is a pure function of the part itself (batch calibration), so a
        rewrite that runs twice writes the same bytes."""
        ...

    def put_document(self, job_id: str, name: str, document: dict[str, Any]) -> None:
        """Write a job's JSON document (``spec.json``, ``manifest.json``), replacing it."""
        ...

    def has_document(self, job_id: str, name: str) -> bool: ...

    def read_document(self, job_id: str, name: str) -> dict[str, Any]:
        """A document written by `put_document`; `FileNotFoundError` if there is none."""
        ...

    def remove_temporaries(self, job_id: str) -> int:
        """Delete what writers that died before publishing left behind; their count."""
        ...

    def location(self, relative: str = "") -> str:
        """Where a `jobs.layout` path (or the root) lives, for people to read."""
        ...


@runtime_checkable
class EvaluationSink(Protocol):
    """A sink that also keeps the evaluations dataset and reads whole jobs back."""

    def read_results(self, job_id: str) -> pa.Table:
        """Every result row of a job, in row order."""
        ...

    def put_evaluation(self, suite: str, job_id: str, data: bytes) -> None:
        """Publish an evaluation run's encoded rows (replacing a run of the same job)."""
        ...

    def read_evaluations(self, suite: str | None = None) -> pa.Table:
        """Every evaluation row of a suite (or of all suites), unsorted."""
        ...


class ParquetSink:
    """Parts as files under a results root: a local path or a pyarrow filesystem URI."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        if "://" in uri:
            self.fs, self.root = pafs.FileSystem.from_uri(uri)
        else:
            self.fs, self.root = pafs.LocalFileSystem(), os.path.abspath(uri)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

    def location(self, relative: str = "") -> str:
        """The filesystem path of a `jobs.layout` path (the root itself by default)."""
        return f"{self.root}/{relative}" if relative else self.root

    def path(self, job_id: str, chunk: int, kind: str = "results") -> str:
        return self.location(layout.part(kind, job_id, chunk))

    def dataset_glob(self, kind: str = "results") -> str:
        """The glob that reads every job's parts of ``kind`` (local roots)."""
        return self.location(layout.part_glob(kind))

    def has_part(self, job_id: str, chunk: int, kind: str = "results") -> bool:
        info = self.fs.get_file_info(self.path(job_id, chunk, kind))
        return bool(info.type == pafs.FileType.File)

    def put_part(self, job_id: str, chunk: int, kind: str, data: bytes) -> bool:
        final = self.path(job_id, chunk, kind)
        directory = final.rsplit("/", 1)[0]
        self.fs.create_dir(directory, recursive=True)
        tmp = layout.temporary(directory, part_name(chunk), uuid.uuid4().hex)
        self._write(tmp, data)
        if self.local:
            try:
                os.link(tmp, final)  # atomic, and fails if the part exists: no clobber
                return True
            except FileExistsError:
                return False
            except FileNotFoundError:
                # the job's finalizer removed our temporary (`remove_temporaries`): it
                # finalizes once every chunk is recorded, so this chunk's part exists
                if not os.path.exists(final):
                    raise
                return False
            finally:
                with contextlib.suppress(FileNotFoundError):  # or the finalizer did
                    os.unlink(tmp)
        try:
            if self.has_part(job_id, chunk, kind):
                self.fs.delete_file(tmp)
                return False
            self.fs.move(tmp, final)
        except FileNotFoundError:  # the finalizer removed our temporary, as above
            if not self.has_part(job_id, chunk, kind):
                raise
            return False
        return True

    def replace_part(self, job_id: str, chunk: int, kind: str, data: bytes) -> bool:
        if not self.has_part(job_id, chunk, kind):
            return False
        final = self.path(job_id, chunk, kind)
        tmp = layout.temporary(final.rsplit("/", 1)[0], part_name(chunk), uuid.uuid4().hex)
        self._write(tmp, data)
        if self.local:
            os.replace(tmp, final)
        else:
            self.fs.move(tmp, final)
        return True

    def read_part(self, job_id: str, chunk: int, kind: str = "results") -> bytes:
        with self.fs.open_input_file(self.path(job_id, chunk, kind)) as f:
            data: bytes = f.read()
            return data

    def remove_temporaries(self, job_id: str) -> int:
        """Delete temporary files a writer left when it died before publishing; their count."""
        removed = 0
        for kind in KINDS:
            selector = pafs.FileSelector(self.location(layout.part_dir(kind, job_id)),
                                         allow_not_found=True)
            for info in self.fs.get_file_info(selector):
                if not layout.is_temporary(info.base_name):
                    continue
                try:
                    self.fs.delete_file(info.path)
                except FileNotFoundError:  # its writer, still alive, removed it itself
                    continue
                removed += 1
        return removed

    def remove_job(self, job_id: str) -> int:
        """Delete the job's parts of every kind and its documents (`inferq delete
        --files`); how many of those folders existed. Evaluation runs stay: they are
        their suite's history."""
        removed = 0
        for relative in (*(layout.part_dir(kind, job_id) for kind in KINDS),
                         layout.document_dir(job_id)):
            path = self.location(relative)
            if self.fs.get_file_info(path).type == pafs.FileType.Directory:
                self.fs.delete_dir(path)
                removed += 1
        return removed

    def part_chunks(self, job_id: str, kind: str = "results") -> list[int]:
        """Chunks whose part of ``kind`` is published."""
        selector = pafs.FileSelector(self.location(layout.part_dir(kind, job_id)),
                                     allow_not_found=True)
        chunks = []
        for info in self.fs.get_file_info(selector):
            chunk = layout.chunk_of(info.base_name)
            if info.type == pafs.FileType.File and chunk is not None:
                chunks.append(chunk)
        return sorted(chunks)

    def put_document(self, job_id: str, name: str, document: dict[str, Any]) -> None:
        self._replace(layout.document(job_id, name),
                      json.dumps(document, indent=2, sort_keys=True).encode())

    def put_evaluation(self, suite: str, job_id: str, data: bytes) -> None:
        self._replace(layout.evaluation(suite, job_id), data)

    def read_evaluations(self, suite: str | None = None) -> pa.Table:
        try:
            dataset = ds.dataset(self.location(layout.evaluations_dir(suite)),
                                 filesystem=self.fs, format="parquet",
                                 schema=EVALUATIONS_SCHEMA, exclude_invalid_files=True,
                                 ignore_prefixes=[".", "_"])
            return dataset.to_table()
        except FileNotFoundError:
            return EVALUATIONS_SCHEMA.empty_table()

    def _replace(self, relative: str, data: bytes) -> None:
        """Write a whole file at ``relative``, replacing any: temporary name, then move."""
        directory, name = self.location(relative).rsplit("/", 1)
        self.fs.create_dir(directory, recursive=True)
        tmp = layout.temporary(directory, name, uuid.uuid4().hex)
        self._write(tmp, data)
        self.fs.move(tmp, f"{directory}/{name}")

    def _write(self, tmp: str, data: bytes) -> None:
        """Write a temporary file whole, or remove what was written (a full disk)."""
        try:
            with self.fs.open_output_stream(tmp) as out:
                out.write(data)
        except BaseException:
            with contextlib.suppress(OSError):
                self.fs.delete_file(tmp)
            raise

    def has_document(self, job_id: str, name: str) -> bool:
        info = self.fs.get_file_info(self.location(layout.document(job_id, name)))
        return bool(info.type == pafs.FileType.File)

    def read_document(self, job_id: str, name: str) -> dict[str, Any]:
        with self.fs.open_input_stream(self.location(layout.document(job_id, name))) as f:
            data: dict[str, Any] = json.loads(f.read())
            return data

    def read_results(self, job_id: str) -> pa.Table:
        """Every result row of a job, in row order."""
        tables = [pq.read_table(pa.BufferReader(self.read_part(job_id, c)), **SINGLE_THREADED)
                  for c in self.part_chunks(job_id)]
        if not tables:
            return RESULTS_SCHEMA.empty_table()
        return with_results_schema(pa.concat_tables(tables, promote_options="default")
                                   ).sort_by("row_index")


def with_results_schema(table: pa.Table) -> pa.Table:
    """``table`` with `RESULTS_SCHEMA`'s columns in order: parts written by an older
    inferq lack the newer columns (``chat``), which read as nulls."""
    for name in RESULTS_SCHEMA.names:
        if name not in table.schema.names:
            table = table.append_column(RESULTS_SCHEMA.field(name),
                                        pa.nulls(table.num_rows, RESULTS_SCHEMA.field(name).type))
    return table.select(RESULTS_SCHEMA.names)


class RedisPartSink:
    """Parts kept in Redis, for workers that share only Redis with the submitter.

    ``SET NX`` makes the first writer win; documents are kept beside the parts;
    `collect` moves both to a `ParquetSink` on the submitter's side and deletes them
    from Redis.
    """

    def __init__(self, client: Any) -> None:
        self.redis = client

    def _key(self, job_id: str, chunk: int, kind: str) -> str:
        return keys.part(job_id, layout.check_kind(kind), chunk)

    def has_part(self, job_id: str, chunk: int, kind: str = "results") -> bool:
        return bool(self.redis.exists(self._key(job_id, chunk, kind)))

    def put_part(self, job_id: str, chunk: int, kind: str, data: bytes) -> bool:
        return bool(self.redis.set(self._key(job_id, chunk, kind), data, nx=True))

    def replace_part(self, job_id: str, chunk: int, kind: str, data: bytes) -> bool:
        # XX: only while the part is still in Redis. A part already collected is
        # replaced by `collect`'s caller from the document beside it.
        return bool(self.redis.set(self._key(job_id, chunk, kind), data, xx=True))

    def read_part(self, job_id: str, chunk: int, kind: str = "results") -> bytes:
        data = self.redis.get(self._key(job_id, chunk, kind))
        if data is None:
            raise FileNotFoundError(f"part {kind} {chunk} of {job_id} is not in Redis")
        return bytes(data)

    def put_document(self, job_id: str, name: str, document: dict[str, Any]) -> None:
        self.redis.set(keys.document(job_id, name), json.dumps(document, sort_keys=True))

    def has_document(self, job_id: str, name: str) -> bool:
        return bool(self.redis.exists(keys.document(job_id, name)))

    def read_document(self, job_id: str, name: str) -> dict[str, Any]:
        data = self.redis.get(keys.document(job_id, name))
        if data is None:
            raise FileNotFoundError(f"document {name} of {job_id} is not in Redis")
        document: dict[str, Any] = json.loads(data)
        return document

    def remove_temporaries(self, job_id: str) -> int:
        return 0  # SET NX writes whole values: nothing is ever half-written

    def location(self, relative: str = "") -> str:
        return f"Redis ({relative or 'results in flight'})"

    def collect(self, job_id: str, chunks: int, dest: ParquetSink) -> int:
        """Move every part and document present in Redis to ``dest``; returns parts moved."""
        for name in layout.DOCUMENTS:
            doc_key = keys.document(job_id, name)
            document = self.redis.get(doc_key)
            if document is not None:
                dest.put_document(job_id, name, json.loads(document))
                self.redis.delete(doc_key)
        moved = 0
        for chunk in range(chunks):
            for kind in KINDS:
                key = keys.part(job_id, kind, chunk)
                data = self.redis.get(key)
                if data is None:
                    continue
                dest.put_part(job_id, chunk, kind, bytes(data))
                self.redis.delete(key)
                moved += kind == "results"
        return moved
