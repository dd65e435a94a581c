"""A small, bounded reader of GGUF headers (standard library only).

Used for discovery (architecture, file type) and to reject a file that is not
GGUF, or a truncated or absurd one, before an engine parses it. Nothing is read
that the file does not hold (a claimed length is checked against the bytes left
first), arrays are skipped by seeking, and nesting is bounded: a crafted header
costs neither memory nor stack.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import BinaryIO

from inference.errors import ModelLoadError

MAGIC = b"GGUF"
_MAX_TENSORS = 1 << 20
_MAX_KV = 1 << 16
_MAX_STRING = 1 << 24
_MAX_ARRAY = 1 << 24
_MAX_NESTING = 4   # arrays of arrays (GGUF files in use hold none)

# GGUF value types: id -> struct format (None for string / array).
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9

# llama.cpp's general.file_type -> bits per weight of the main tensors.
_FILE_TYPE_BITS = {0: 32, 1: 16, 2: 4, 3: 4, 7: 8, 8: 5, 9: 5, 10: 2, 11: 3, 12: 3, 13: 3,
                   14: 4, 15: 4, 16: 5, 17: 5, 18: 6, 32: 16}


@dataclass(frozen=True, slots=True)
class GGUFHeader:
    """The metadata that discovery and loading need; arrays are skipped."""

    version: int
    tensor_count: int
    metadata: dict[str, object]

    @property
    def architecture(self) -> str:
        value = self.metadata.get("general.architecture", "")
        return value if isinstance(value, str) else ""

    @property
    def quant_bits(self) -> int:
        file_type = self.metadata.get("general.file_type")
        return file_type_bits(file_type) if isinstance(file_type, int) else 0


def file_type_bits(file_type: int) -> int:
    """Bits per weight of the main tensors for llama.cpp's ``general.file_type``; 0 = unknown."""
    return _FILE_TYPE_BITS.get(file_type, 0)


class _Reader:
    def __init__(self, stream: BinaryIO, path: str) -> None:
        self.stream = stream
        self.path = path
        self.size = os.fstat(stream.fileno()).st_size

    def _check_left(self, size: int) -> None:
        if size > self.size - self.stream.tell():
            raise ModelLoadError(self.path, "truncated GGUF header")

    def take(self, size: int) -> bytes:
        self._check_left(size)
        data = self.stream.read(size)
        if len(data) != size:
            raise ModelLoadError(self.path, "truncated GGUF header")
        return data

    def skip(self, size: int) -> None:
        self._check_left(size)
        self.stream.seek(size, os.SEEK_CUR)

    def unpack(self, fmt: str) -> object:
        value: object = struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]
        return value

    def u32(self) -> int:
        value: int = struct.unpack("<I", self.take(4))[0]
        return value

    def count(self, limit: int, what: str) -> int:
        value: int = struct.unpack("<Q", self.take(8))[0]
        if value > limit:
            raise ModelLoadError(
                self.path, f"GGUF header claims {value:,} {what} (limit {limit:,})")
        return value

    def string(self) -> str:
        raw = self.take(self.count(_MAX_STRING, "bytes in a string"))
        return raw.decode("utf-8", errors="replace")

    def value(self, kind: int) -> object:
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            self.skip_array(0)
            return None
        raise ModelLoadError(self.path, f"unknown GGUF value type {kind}")

    def skip_array(self, depth: int) -> None:
        """Skip an array's items without decoding them."""
        if depth >= _MAX_NESTING:
            raise ModelLoadError(self.path, f"GGUF arrays nested more than {_MAX_NESTING} deep")
        item_kind = self.u32()
        length = self.count(_MAX_ARRAY, "array items")
        if item_kind in _SCALARS:
            self.skip(length * struct.calcsize(_SCALARS[item_kind]))
        elif item_kind == _STRING:
            for _ in range(length):
                self.skip(self.count(_MAX_STRING, "bytes in a string"))
        elif item_kind == _ARRAY:
            for _ in range(length):
                self.skip_array(depth + 1)
        else:
            raise ModelLoadError(self.path, f"unknown GGUF value type {item_kind}")


def read_gguf_header(path: str) -> GGUFHeader:
    """Read and check the header of the GGUF file at ``path``.

    Raises `ModelLoadError` for a missing file, wrong magic, an unsupported
    version, a truncated header or counts beyond sane limits.
    """
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise ModelLoadError(path, exc.strerror or str(exc)) from exc
    with stream:
        reader = _Reader(stream, path)
        magic = stream.read(4)
        if magic != MAGIC:
            raise ModelLoadError(path, f"not a GGUF file (magic {magic!r}, expected {MAGIC!r})")
        version = reader.u32()
        if version not in (2, 3):
            raise ModelLoadError(path, f"unsupported GGUF version {version}")
        tensors = reader.count(_MAX_TENSORS, "tensors")
        kv_count = reader.count(_MAX_KV, "metadata entries")
        metadata: dict[str, object] = {}
        for _ in range(kv_count):
            key = reader.string()
            kind = reader.u32()
            value = reader.value(kind)
            if value is not None:
                metadata[key] = value
    return GGUFHeader(version=version, tensor_count=tensors, metadata=metadata)
