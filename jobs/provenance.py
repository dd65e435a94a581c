"""What produced a chunk's rows: engine and version, model file and digest, settings.

Every metrics part carries one `Provenance` (its columns in `jobs.schema.METRICS_SCHEMA`),
and a job's manifest lists the distinct ones with their chunks, so analysts can group
throughput and answers by engine build or model file, and can tell two runs of "the
same" model id apart when a host's file changed. The worker fills it in
(`worker.provenance`); this module only holds and compares it. Empty strings and
zeros mean unknown (a model served over HTTP has no file to hash) and are written
as nulls.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True, slots=True, kw_only=True)
class Provenance:
    """Where a chunk ran, beyond host and device: one sentence per field."""

    engine: str = ""               #: llama-cpp-python, mlx-lm, the HTTP server's name
    engine_version: str = ""       #: its version; "" = it does not say
    model_path: str = ""           #: the model file or directory as the worker found it
    model_size_bytes: int = 0      #: its size (a directory: all its files); 0 = no file
    model_sha256: str = ""         #: a file's SHA-256; a directory's: of its files' (manifest)
    inferq_version: str = ""       #: the inferq that ran the chunk
    parallel_slots: int = 0        #: the worker's setting; 0 = the backend's default
    batch_size: int = 0            #: rows sent to the model in one call
    context_len: int = 0           #: the context the loaded model runs with

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def columns(self) -> dict[str, Any]:
        """The metrics columns: unknown values (``""``, 0) as None."""
        return {k: (v or None) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Provenance:
        """From `to_dict` or a metrics row; unknown keys (a newer inferq's) and nulls
        are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names and v is not None})


#: The metrics columns `Provenance` fills, in order.
PROVENANCE_COLUMNS = tuple(f.name for f in fields(Provenance))


def distinct(by_chunk: Iterable[tuple[int, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """The distinct provenances of a job's chunks, each with the chunks it ran, for the
    manifest: ``[{engine, ..., chunks: [0, 1, ...]}, ...]``, ordered by first chunk.
    Chunks without one (cancelled, failed whole, run by an older inferq) are left out."""
    groups: dict[tuple[tuple[str, Any], ...], list[int]] = {}
    for chunk, data in sorted(by_chunk, key=lambda item: item[0]):
        if not data:
            continue
        key = tuple(sorted(Provenance.from_dict(data).to_dict().items()))
        groups.setdefault(key, []).append(chunk)
    return [dict(key) | {"chunks": chunks} for key, chunks in groups.items()]
