"""Where result parts go: a Parquet dataset on any pyarrow filesystem, written once.

Layout under the results root (hive-partitioned by job, so one glob reads all jobs)::

    results/job=<id>/part-<chunk:06d>.parquet    result rows (RESULTS_SCHEMA)
    metrics/job=<id>/part-<chunk:06d>.parquet    one row of generation metrics
    jobs/<id>/spec.json                          the job spec
    jobs/<id>/manifest.json                      written when the job ends

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
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

KINDS = ("results", "metrics")


def part_name(chunk: int) -> str:
    return f"part-{chunk:06d}.parquet"


def encode_table(table: pa.Table) -> bytes:
    """A table as Parquet bytes (zstd), for disk or for Redis."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


class PartSink(Protocol):
    """Stores each chunk's parts once. Sinks see encoded parts and a (job, chunk) address."""

    def has_part(self, job_id: str, chunk: int, kind: str = "results") -> bool: ...

    def put_part(self, job_id: str, chunk: int, kind: str, data: bytes) -> bool:
        """Publish ``data`` unless the part exists; True if this call published it."""
        ...

    def read_part(self, job_id: str, chunk: int, kind: str = "results") -> bytes: ...

    def put_document(self, job_id: str, name: str, document: dict[str, Any]) -> None: ...


class ParquetSink:
    """Parts as files under a results root: a local path or a pyarrow filesystem URI."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        if "://" in uri:
            self.fs, self.root = pafs.FileSystem.from_uri(uri)
        else:
            self.fs, self.root = pafs.LocalFileSystem(), os.path.abspath(uri)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

    def path(self, job_id: str, chunk: int, kind: str = "results") -> str:
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r}: use one of {KINDS}")
        return f"{self.root}/{kind}/job={job_id}/{part_name(chunk)}"

    def dataset_glob(self, kind: str = "results") -> str:
        """The glob that reads every job's parts of ``kind`` (local roots)."""
        return f"{self.root}/{kind}/job=*/*.parquet"

    def has_part(self, job_id: str, chunk: int, kind: str = "results") -> bool:
        info = self.fs.get_file_info(self.path(job_id, chunk, kind))
        return bool(info.type == pafs.FileType.File)

    def put_part(self, job_id: str, chunk: int, kind: str, data: bytes) -> bool:
        final = self.path(job_id, chunk, kind)
        directory = final.rsplit("/", 1)[0]
        self.fs.create_dir(directory, recursive=True)
        tmp = f"{directory}/.{part_name(chunk)}.{uuid.uuid4().hex}.tmp"
        self._write(tmp, data)
        if self.local:
            try:
                os.link(tmp, final)  # atomic, and fails if the part exists: no clobber
                return True
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
        if self.has_part(job_id, chunk, kind):
            self.fs.delete_file(tmp)
            return False
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
            selector = pafs.FileSelector(f"{self.root}/{kind}/job={job_id}",
                                         allow_not_found=True)
            for info in self.fs.get_file_info(selector):
                if info.base_name.startswith(".") and info.base_name.endswith(".tmp"):
                    self.fs.delete_file(info.path)
                    removed += 1
        return removed

    def part_chunks(self, job_id: str, kind: str = "results") -> list[int]:
        """Chunks whose part of ``kind`` is published."""
        selector = pafs.FileSelector(f"{self.root}/{kind}/job={job_id}", allow_not_found=True)
        chunks = []
        for info in self.fs.get_file_info(selector):
            name = info.base_name
            if info.type == pafs.FileType.File and name.startswith("part-") \
                    and name.endswith(".parquet"):
                chunks.append(int(name[5:11]))
        return sorted(chunks)

    def put_document(self, job_id: str, name: str, document: dict[str, Any]) -> None:
        directory = f"{self.root}/jobs/{job_id}"
        self.fs.create_dir(directory, recursive=True)
        tmp = f"{directory}/.{name}.{uuid.uuid4().hex}.tmp"
        self._write(tmp, json.dumps(document, indent=2, sort_keys=True).encode())
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
        info = self.fs.get_file_info(f"{self.root}/jobs/{job_id}/{name}")
        return bool(info.type == pafs.FileType.File)

    def read_document(self, job_id: str, name: str) -> dict[str, Any]:
        with self.fs.open_input_stream(f"{self.root}/jobs/{job_id}/{name}") as f:
            data: dict[str, Any] = json.loads(f.read())
            return data

    def read_results(self, job_id: str) -> pa.Table:
        """Every result row of a job, in row order."""
        from jobs.schema import RESULTS_SCHEMA

        tables = [pq.read_table(pa.BufferReader(self.read_part(job_id, c)))
                  for c in self.part_chunks(job_id)]
        if not tables:
            return RESULTS_SCHEMA.empty_table()
        return pa.concat_tables(tables).sort_by("row_index")


class RedisPartSink:
    """Parts kept in Redis, for workers that share only Redis with the submitter.

    ``SET NX`` makes the first writer win; `collect` moves parts to a
    `ParquetSink` on the submitter's side and deletes them from Redis.
    """

    def __init__(self, client: Any) -> None:
        self.redis = client

    def _key(self, job_id: str, chunk: int, kind: str) -> str:
        from jobs import keys

        if kind not in KINDS:
            raise ValueError(f"kind={kind!r}: use one of {KINDS}")
        return keys.part(job_id, kind, chunk)

    def has_part(self, job_id: str, chunk: int, kind: str = "results") -> bool:
        return bool(self.redis.exists(self._key(job_id, chunk, kind)))

    def put_part(self, job_id: str, chunk: int, kind: str, data: bytes) -> bool:
        return bool(self.redis.set(self._key(job_id, chunk, kind), data, nx=True))

    def read_part(self, job_id: str, chunk: int, kind: str = "results") -> bytes:
        data = self.redis.get(self._key(job_id, chunk, kind))
        if data is None:
            raise FileNotFoundError(f"part {kind} {chunk} of {job_id} is not in Redis")
        return bytes(data)

    def put_document(self, job_id: str, name: str, document: dict[str, Any]) -> None:
        """Documents (spec, manifest) are written by the collector on the disk side."""

    def collect(self, job_id: str, chunks: int, dest: ParquetSink) -> int:
        """Move every part present in Redis to ``dest``; returns parts moved."""
        from jobs import keys

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
