"""A multipart upload streamed to disk: the file part goes to a file as it arrives.

Nothing holds the whole upload in memory: each piece of the request body goes
through python-multipart's streaming parser and the file part's bytes straight to
``dest``. Past the byte or line limit the upload stops at once with 413 and the
partial file is removed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from fastapi import Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from worker.server.errors import APIError, bad_request

FIELD_LIMIT = 64 * 1024  #: a form field other than the file: its most bytes


@dataclass(slots=True)
class Upload:
    """What an upload left: its form fields, and the file's name, size and lines."""

    fields: dict[str, str] = field(default_factory=dict)
    filename: str = ""
    size: int = 0
    lines: int = 0
    got_file: bool = False


class _Receiver:
    """python-multipart callbacks: headers parsed per part, the file part to ``out``."""

    def __init__(self, out: IO[bytes], max_bytes: int, max_lines: int) -> None:
        self.out, self.max_bytes, self.max_lines = out, max_bytes, max_lines
        self.upload = Upload()
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name = ""
        self._is_file = False
        self._value = bytearray()
        self._last = b"\n"

    def callbacks(self) -> dict[str, object]:
        return {"on_part_begin": self.part_begin, "on_header_field": self.header_field,
                "on_header_value": self.header_value, "on_header_end": self.header_end,
                "on_headers_finished": self.headers_finished, "on_part_data": self.part_data,
                "on_part_end": self.part_end}

    def part_begin(self) -> None:
        self._headers, self._value = {}, bytearray()

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field = self._header_value = b""

    def headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = params.get(b"name", b"").decode("utf-8", "replace")
        self._is_file = self._name == "file"
        if self._is_file:
            if self.upload.got_file:
                raise bad_request("one file per upload", param="file")
            self.upload.got_file = True
            self.upload.filename = os.path.basename(
                params.get(b"filename", b"upload.jsonl").decode("utf-8", "replace"))[:255]

    def part_data(self, data: bytes, start: int, end: int) -> None:
        piece = data[start:end]
        if not self._is_file:
            self._value += piece
            if len(self._value) > FIELD_LIMIT:
                raise bad_request(f"form field {self._name!r} is over {FIELD_LIMIT:,} bytes")
            return
        up = self.upload
        up.size += len(piece)
        up.lines += piece.count(b"\n")
        if up.size > self.max_bytes:
            raise APIError(413, f"file is over {self.max_bytes:,} bytes, the limit a file "
                           "(INFERQ_MAX_UPLOAD_BYTES): split it into several batches",
                           code="file_too_large", param="file")
        if up.lines > self.max_lines:
            raise APIError(413, f"file has over {self.max_lines:,} lines, the limit a "
                           "file (INFERQ_MAX_UPLOAD_LINES): split it into several batches",
                           code="too_many_lines", param="file")
        if piece:
            self._last = piece[-1:]
        self.out.write(piece)

    def part_end(self) -> None:
        if self._is_file:
            if self._last != b"\n" and self.upload.size:
                self.upload.lines += 1  # a last line without its newline
                if self.upload.lines > self.max_lines:
                    raise APIError(413, f"file has over {self.max_lines:,} lines, the limit"
                                   " a file (INFERQ_MAX_UPLOAD_LINES)", code="too_many_lines",
                                   param="file")
        else:
            self.upload.fields[self._name] = self._value.decode("utf-8", "replace")


async def receive(request: Request, dest: Path, *, max_bytes: int, max_lines: int) -> Upload:
    """Stream ``request``'s multipart body: the ``file`` part to ``dest``, fields kept.

    Raises `APIError` (400 not multipart or no file, 413 past a limit); ``dest`` is
    removed on any failure.
    """
    kind, params = parse_options_header(request.headers.get("content-type", ""))
    if kind != b"multipart/form-data" or b"boundary" not in params:
        raise bad_request("send the file as multipart/form-data (fields: file, purpose)")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes + FIELD_LIMIT * 4:
        raise APIError(413, f"upload is {int(declared):,} bytes; the limit a file is "
                       f"{max_bytes:,} bytes (INFERQ_MAX_UPLOAD_BYTES)", code="file_too_large",
                       param="file")
    try:
        with open(dest, "xb") as out:
            receiver = _Receiver(out, max_bytes, max_lines)
            parser = MultipartParser(params[b"boundary"], receiver.callbacks())  # type: ignore[arg-type]
            async for piece in request.stream():
                parser.write(piece)
            parser.finalize()
    except MultipartParseError as exc:
        dest.unlink(missing_ok=True)
        raise bad_request(f"the multipart body cannot be read: {exc}") from None
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    if not receiver.upload.got_file:
        dest.unlink(missing_ok=True)
        raise bad_request("no file in the upload: send it as the form field 'file'",
                          param="file")
    return receiver.upload
