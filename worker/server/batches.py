"""Batches: each one an inferq job, ``batch_<job id>``, read back from Redis and disk.

Creating a batch reads its input file as one (`validate.plan`), then submits it
through `worker.client.Client.submit`, the path ``inferq submit`` takes. What the
Batch object needs beyond the job's status lives in the job's spec metadata under
``inferq.*`` keys (endpoint, input file, window, validation errors), so any server
can answer for any batch. Once the job has ended, its output and error files are
exported from its Parquet parts by `worker.export` (the code behind
``inferq results --openai``) as ``file-<job id>-output`` / ``-errors``, once.

Lines refused on their own (`validate.Plan.refused`) run as error rows with an empty
body (the job's input is then a copy, ``files/.inputs/<job id>.jsonl``); the job's
`REFUSED_DOCUMENT` gives their lines in the error file the refusal's code.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict

from jobs import JOB_ID, InvalidJobSpec, JobError, JobNotFound, JobSpec, JobState, JobStatus
from worker.client import Client, NoWorkerForJob
from worker.export import ENDPOINT_KEY, REFUSED_DOCUMENT, export_results, is_chat
from worker.server.auth import check_key
from worker.server.errors import bad_request, not_found
from worker.server.files import FileStore
from worker.server.validate import CONTENT, Plan, plan

PREFIX = "batch_"
INPUT_KEY, WINDOW_KEY, ERRORS_KEY = "inferq.input_file_id", "inferq.completion_window", \
    "inferq.errors"
#: A completion window: OpenAI's ``24h``, or any count of s, m or h (an inferq extension).
WINDOW = re.compile(r"^([1-9][0-9]{0,6})([smh])\Z")
_UNIT = {"s": 1, "m": 60, "h": 3600}
#: Specs a server keeps in memory (a spec never changes once its job exists).
SPEC_CACHE = 10_000
#: inferq states as OpenAI batch statuses (the queue is inferq's own step).
STATUS = {JobState.QUEUED: "in_progress"}


def batch_id(job_id: str) -> str:
    return PREFIX + job_id


def job_id_of(ident: str) -> str:
    """The job behind a batch id; 404 for anything that is not one."""
    job_id = ident.removeprefix(PREFIX)
    if not ident.startswith(PREFIX) or not JOB_ID.match(job_id):
        raise not_found("batch", ident)
    return job_id


def window_seconds(window: str) -> int:
    match = WINDOW.match(window)
    if not match:
        raise bad_request(f"completion_window {window!r}: use '24h' (or a count of s, m or "
                          "h, such as '30m')", param="completion_window")
    return int(match.group(1)) * _UNIT[match.group(2)]


class Batches:
    """Batch objects over a client's Redis and results root, and the files beside them."""

    def __init__(self, client: Client, files: FileStore, chunk_size: int) -> None:
        self.client, self.files, self.chunk_size = client, files, chunk_size
        self._specs: dict[str, JobSpec] = {}

    def create(self, input_file_id: str, endpoint: str, window: str,
               metadata: dict[str, str]) -> dict[str, Any]:
        seconds = window_seconds(window)
        if endpoint not in CONTENT:
            raise bad_request(f"endpoint {endpoint!r} is not supported; inferq runs "
                              f"{' and '.join(CONTENT)}", param="endpoint")
        _check_metadata(metadata)
        source = self.files.get(input_file_id)
        if source["purpose"] != "batch":
            raise bad_request(f"file {input_file_id!r} has purpose {source['purpose']!r}, "
                              "not 'batch'", param="input_file_id")
        path = self.files.content_path(input_file_id)
        found = plan(path, endpoint,
                     max_line_bytes=self.client.settings.input_limits().max_line_bytes)
        meta = metadata | {ENDPOINT_KEY: endpoint, INPUT_KEY: input_file_id,
                           WINDOW_KEY: window}
        spec = self._spec(found, meta, seconds, source["filename"])
        if not found.errors:
            try:
                self.client.check_servable(spec)
                if found.refused:  # those lines run as error rows, answered as refused
                    self.client.sink.put_document(spec.job_id, REFUSED_DOCUMENT, found.refused)
                    path = self._without_refused(path, found.refused, spec)
                self.client.submit(spec, str(path), fmt="jsonl", queue_anyway=True)  # checked
            except NoWorkerForJob:
                found.error(None, "model_not_found", f"no live worker serves model "
                            f"{spec.model!r}; served: {', '.join(self.models()) or 'none'}",
                            "body.model")
            except JobError:  # the job exists, failed, with the reason
                return self.get(batch_id(spec.job_id))
        if found.errors:
            if found.more_errors:
                found.error(None, "too_many_errors", f"{found.more_errors} more errors")
            self._reject(spec, found.errors)
        return self.get(batch_id(spec.job_id))

    def _without_refused(self, path: Path, refused: dict[str, Any], spec: JobSpec) -> Path:
        """The job's input: ``path`` with each refused line left with an empty body (an
        error row that runs nothing), under ``files/.inputs/<job id>.jsonl``."""
        dest = self.files.dir / ".inputs" / f"{spec.job_id}.jsonl"
        dest.parent.mkdir(parents=True, exist_ok=True)
        endpoint = spec.metadata[ENDPOINT_KEY]
        with open(path, "rb") as source, open(dest, "wb") as out:
            for line in source:
                request = json.loads(line) if line.strip() else None
                if request is not None and request.get("custom_id") in refused:
                    line = json.dumps({"custom_id": request["custom_id"], "method": "POST",
                                       "url": endpoint, "body": {}}).encode() + b"\n"
                out.write(line)
        return dest

    def _spec(self, found: Plan, metadata: dict[str, str], seconds: int, name: str
              ) -> JobSpec:
        """The batch's job spec; one with model 'unknown' if the file did not name a
        usable model or options (the batch then fails with ``found.errors``)."""
        created = time.time()
        common: dict[str, Any] = {"chunk_size": self.chunk_size, "deadline": created + seconds,
                                  "metadata": metadata, "input_name": name,
                                  "created_at": created}
        if not found.errors:
            try:
                return JobSpec(op=found.op, model=found.model,
                               options=found.generate_options(), **common)
            except (InvalidJobSpec, ValueError) as exc:
                found.error(None, "invalid_request", str(exc), "body")
        return JobSpec(op="generate", model="unknown", **common)

    def _reject(self, spec: JobSpec, errors: list[dict[str, Any]]) -> None:
        """Record a batch that failed validation: a failed job with its errors."""
        spec = replace(spec, metadata=spec.metadata | {ERRORS_KEY: json.dumps(errors)})
        store = self.client.store
        store.create_job(spec, total=0, chunks=0)
        store.set_state(spec.job_id, JobState.FAILED,
                        error=f"input file failed validation: {errors[0]['message']}")

    def models(self) -> list[str]:
        return sorted({m for w in self.client.workers() for m in w.get("models", {})})

    def get(self, ident: str) -> dict[str, Any]:
        job_id = job_id_of(ident)
        spec = self._spec_of(job_id)
        if spec is None:  # no such job, or a job not submitted as a batch
            raise not_found("batch", ident)
        try:
            status = self.client.store.status(job_id)
        except JobNotFound:
            raise not_found("batch", ident) from None
        return self._object(spec, status)

    def page(self, after: str | None, limit: int) -> dict[str, Any]:
        """Batches newest first: ``limit`` of them after the batch ``after``."""
        found, start = self._newest(after, limit)
        page = found[start:start + limit]
        data = [self._object(spec, status) for spec, status in page]
        return {"object": "list", "data": data, "has_more": start + limit < len(found),
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None}

    def _newest(self, after: str | None, limit: int
                ) -> tuple[list[tuple[JobSpec, JobStatus]], int]:
        """The newest batches, enough to hold ``after`` and ``limit`` + 1 past it, and
        the index after ``after``; reads 4 times more jobs until it has them."""
        wanted = 64
        while True:
            statuses = self.client.store.list_jobs(wanted)
            found = [(spec, status) for status in statuses
                     if (spec := self._spec_of(status.job_id)) is not None]
            ids = [batch_id(spec.job_id) for spec, _ in found]
            start = ids.index(after) + 1 if after in ids else (len(ids) if after else 0)
            everything = len(statuses) < wanted
            if everything or ((after in ids or not after) and len(found) - start > limit):
                return found, start
            wanted *= 4

    def _spec_of(self, job_id: str) -> JobSpec | None:
        """A batch's spec (specs never change: kept, up to `SPEC_CACHE`); None for a job
        that is not a batch or is gone."""
        spec = self._specs.get(job_id)
        if spec is None:
            try:
                spec = self.client.store.get_spec(job_id)
            except JobNotFound:
                return None
            if len(self._specs) >= SPEC_CACHE:
                self._specs.pop(next(iter(self._specs)))
            self._specs[job_id] = spec
        return spec if ENDPOINT_KEY in spec.metadata else None

    def cancel(self, ident: str) -> dict[str, Any]:
        self.get(ident)  # 404 for a stranger
        self.client.cancel(job_id_of(ident))
        return self.get(ident)

    def _object(self, spec: JobSpec, status: JobStatus) -> dict[str, Any]:
        stamps = status.timestamps
        meta = spec.metadata
        state = JobState(status.state)

        def at(name: str) -> int | None:
            value = stamps.get(f"{name}_at")
            return int(value) if value else None

        output = errors = None
        if state in (JobState.COMPLETED, JobState.EXPIRED, JobState.CANCELLED,
                     JobState.FAILED) and status.done_rows:
            output, errors = self._outputs(spec, status)
        prompt = sum(int(m.get("prompt_tokens", 0)) for m in status.metrics.values())
        generated = sum(int(m.get("generated_tokens", 0)) for m in status.metrics.values())
        rejected = json.loads(meta.get(ERRORS_KEY, "null"))
        if rejected is None and state == JobState.FAILED and not status.total and status.error:
            rejected = [_error_of(status.error, self.files.dir)]
        window = meta.get(WINDOW_KEY, "24h")
        return {
            "id": batch_id(spec.job_id), "object": "batch", "endpoint": meta[ENDPOINT_KEY],
            "model": spec.model, "input_file_id": meta.get(INPUT_KEY, ""),
            "completion_window": window, "status": STATUS.get(state, str(state)),
            "output_file_id": output, "error_file_id": errors,
            "errors": {"object": "list", "data": rejected} if rejected else None,
            "created_at": int(spec.created_at),
            "in_progress_at": at("in_progress") or at("queued"),
            "expires_at": int(spec.created_at) + window_seconds(window),
            "finalizing_at": at("finalizing"), "completed_at": at("completed"),
            "failed_at": at("failed"), "expired_at": at("expired"),
            "cancelling_at": at("cancelling"), "cancelled_at": at("cancelled"),
            "request_counts": {"total": status.total, "completed": status.completed,
                               "failed": status.failed},
            "usage": {"input_tokens": prompt, "output_tokens": generated,
                      "total_tokens": prompt + generated,
                      "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens_details": {"reasoning_tokens": 0}},
            "metadata": {k: v for k, v in meta.items() if not k.startswith("inferq.")},
        }

    def _outputs(self, spec: JobSpec, status: JobStatus) -> tuple[str | None, str | None]:
        """The ended job's output and error file ids, exported on first asking."""
        job_id = spec.job_id
        wanted = {"output": status.completed, "errors": status.failed}
        ids = {kind: f"file-{job_id}-{kind}" for kind, rows in wanted.items() if rows}
        missing = [kind for kind, file_id in ids.items() if not self.files.exists(file_id)]
        if missing:
            self.client.collect(job_id)
            table = self.client.sink.read_results(job_id)
            sink = self.client.sink
            refused = sink.read_document(job_id, REFUSED_DOCUMENT) \
                if sink.has_document(job_id, REFUSED_DOCUMENT) else None
            for kind in missing:
                tmp = self.files.temporary()
                export_results(table, str(tmp), openai=True, errors=kind == "errors",
                               chat=is_chat(spec.metadata), refused=refused)
                self.files.publish(ids[kind], tmp, filename=f"batch_{job_id}_{kind}.jsonl",
                                   purpose="batch_output")
        return ids.get("output"), ids.get("errors")


def _check_metadata(metadata: dict[str, str]) -> None:
    if len(metadata) > 16:
        raise bad_request("metadata holds at most 16 pairs", param="metadata")
    for key, value in metadata.items():
        if not isinstance(value, str) or len(key) > 64 or len(value) > 512:
            raise bad_request(f"metadata {key!r}: keys up to 64 characters, values strings "
                              "up to 512", param="metadata")
        if key.startswith("inferq."):
            raise bad_request(f"metadata {key!r}: keys starting 'inferq.' are reserved",
                              param="metadata")


_LINE = re.compile(r"line (\d+)")


def _error_of(message: str, files_dir: Any) -> dict[str, Any]:
    """A job's failure reason as a batch error: its line, if it names one; no paths."""
    text = message.replace(f"{files_dir}/", "")
    line = _LINE.search(text)
    return {"code": "invalid_input", "line": int(line.group(1)) if line else None,
            "message": text, "param": None}


router = APIRouter(dependencies=[Depends(check_key)])


def _batches(request: Request) -> Batches:
    batches: Batches = request.app.state.batches
    return batches


class BatchCreate(BaseModel):
    """The body of ``POST /v1/batches``; any other field is refused, never ignored."""

    model_config = ConfigDict(extra="forbid")
    input_file_id: str
    endpoint: str
    completion_window: str = "24h"
    metadata: dict[str, str] | None = None


@router.post("/v1/batches")
def create_batch(request: Request, body: BatchCreate) -> dict[str, Any]:
    return _batches(request).create(body.input_file_id, body.endpoint, body.completion_window,
                                    body.metadata or {})


@router.get("/v1/batches")
def list_batches(request: Request, after: str | None = None, limit: int = 20
                 ) -> dict[str, Any]:
    if not 1 <= limit <= 100:
        raise bad_request("limit must be 1 to 100", param="limit")
    return _batches(request).page(after, limit)


@router.get("/v1/batches/{ident}")
def retrieve_batch(request: Request, ident: str) -> dict[str, Any]:
    return _batches(request).get(ident)


@router.post("/v1/batches/{ident}/cancel")
def cancel_batch(request: Request, ident: str) -> dict[str, Any]:
    return _batches(request).cancel(ident)
