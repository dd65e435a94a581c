"""Files: uploads and batch outputs, kept under ``<results root>/files``.

A file ``file-<id>`` is two entries side by side: ``file-<id>.jsonl`` (its bytes) and
``file-<id>.json`` (its OpenAI file object). Both are written under a temporary
name and renamed into place, the object last, so a file is listed only once it is
whole, whichever server wrote it. Ids are checked against `FILE_ID` before they
touch a path.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse

from worker.server.auth import check_key
from worker.server.errors import bad_request, not_found
from worker.server.upload import receive

#: A file id: never a path (no '/', no '.', no '..').
FILE_ID = re.compile(r"^file-[A-Za-z0-9_-]{1,100}\Z")
PURPOSES = ("batch", "batch_output")


class FileStore:
    """The files directory: create, read, list and delete file objects."""

    def __init__(self, root: str | Path) -> None:
        self.dir = Path(root) / "files"

    def _paths(self, file_id: str) -> tuple[Path, Path]:
        if not FILE_ID.match(file_id):
            raise not_found("file", file_id)
        return self.dir / f"{file_id}.jsonl", self.dir / f"{file_id}.json"

    def content_path(self, file_id: str) -> Path:
        """The path of a file's bytes; 404 unless the file exists."""
        self.get(file_id)
        return self._paths(file_id)[0]

    def get(self, file_id: str) -> dict[str, Any]:
        meta = self._paths(file_id)[1]
        try:
            return dict(json.loads(meta.read_text()))
        except FileNotFoundError:
            raise not_found("file", file_id) from None

    def exists(self, file_id: str) -> bool:
        return FILE_ID.match(file_id) is not None and self._paths(file_id)[1].exists()

    def temporary(self) -> Path:
        """A fresh temporary path in the files directory, for content being written."""
        self.dir.mkdir(parents=True, exist_ok=True)
        return self.dir / f".tmp-{secrets.token_hex(8)}"

    def publish(self, file_id: str, tmp: Path, *, filename: str, purpose: str
                ) -> dict[str, Any]:
        """Move ``tmp`` into place as ``file_id`` and write its object; returns it."""
        content, meta = self._paths(file_id)
        obj = {"id": file_id, "object": "file", "bytes": tmp.stat().st_size,
               "created_at": int(time.time()), "filename": filename, "purpose": purpose,
               "status": "processed", "expires_at": None, "status_details": None}
        os.replace(tmp, content)
        staged = self.temporary()
        staged.write_text(json.dumps(obj))
        os.replace(staged, meta)
        return obj

    def list(self, purpose: str | None = None) -> list[dict[str, Any]]:
        """Every file object, newest first."""
        found = []
        for meta in self.dir.glob("file-*.json") if self.dir.exists() else ():
            try:
                obj = json.loads(meta.read_text())
                written = meta.stat().st_mtime_ns  # finer than created_at's seconds
            except (FileNotFoundError, ValueError):
                continue  # deleted meanwhile
            if purpose is None or obj.get("purpose") == purpose:
                found.append((written, obj))
        found.sort(key=lambda w: w[1]["id"], reverse=True)  # uploads: time-ordered ids
        found.sort(key=lambda w: -w[0])  # stable: ties keep the order of their ids
        return [obj for _, obj in found]

    def delete(self, file_id: str) -> None:
        content, meta = self._paths(file_id)
        if not meta.exists():
            raise not_found("file", file_id)
        meta.unlink(missing_ok=True)  # unlisted first, then its bytes
        content.unlink(missing_ok=True)


def new_file_id() -> str:
    """A time-ordered, unguessable id: ``file-<unix µs hex>-<random hex>``."""
    return f"file-{time.time_ns() // 1000:014x}-{secrets.token_hex(8)}"


router = APIRouter(dependencies=[Depends(check_key)])


def _files(request: Request) -> FileStore:
    store: FileStore = request.app.state.files
    return store


@router.post("/v1/files")
async def create_file(request: Request) -> dict[str, Any]:
    files, limits = _files(request), request.app.state.server
    tmp = files.temporary()
    upload = await receive(request, tmp, max_bytes=limits.max_upload_bytes,
                           max_lines=limits.max_upload_lines)
    purpose = upload.fields.get("purpose", "")
    if purpose != "batch":
        tmp.unlink(missing_ok=True)
        raise bad_request(f"purpose {purpose!r} is not supported: inferq keeps files for "
                          "purpose 'batch'", param="purpose")
    return files.publish(new_file_id(), tmp, filename=upload.filename, purpose="batch")


@router.get("/v1/files")
def list_files(request: Request, purpose: str | None = None, limit: int = 10_000,
               after: str | None = None, order: str = "desc") -> dict[str, Any]:
    if order not in ("asc", "desc"):
        raise bad_request(f"order {order!r}: use 'asc' or 'desc'", param="order")
    if not 1 <= limit <= 10_000:
        raise bad_request("limit must be 1 to 10,000", param="limit")
    found = _files(request).list(purpose)
    if order == "asc":
        found.reverse()
    if after:
        ids = [o["id"] for o in found]
        found = found[ids.index(after) + 1:] if after in ids else []
    page = found[:limit]
    return {"object": "list", "data": page, "has_more": len(found) > len(page),
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None}


@router.get("/v1/files/{file_id}")
def retrieve_file(request: Request, file_id: str) -> dict[str, Any]:
    return _files(request).get(file_id)


@router.get("/v1/files/{file_id}/content")
def file_content(request: Request, file_id: str) -> FileResponse:
    files = _files(request)
    obj = files.get(file_id)
    return FileResponse(files.content_path(file_id), media_type="application/jsonl",
                        filename=obj["filename"])


@router.delete("/v1/files/{file_id}")
def delete_file(request: Request, file_id: str) -> dict[str, Any]:
    _files(request).delete(file_id)
    return {"id": file_id, "object": "file", "deleted": True}
