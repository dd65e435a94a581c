"""Batches: each one an inferq job, ``batch_<job id>``, read back from Redis and disk.

Creating a batch checks the request, records it as validating (`pending`: the request
in Redis, leased to this server) and answers ``validating`` at once; in the background
the input file is read as one (`validate.plan`) and submitted through
`worker.client.Client.submit`, the path ``inferq submit`` takes, or recorded failed with
its ``errors``. A server that stops mid-validation leaves a lease that runs out; any
server's sweep resumes it (`Batches.resume_stale`). What the Batch object needs beyond
the job's status lives in the job's spec metadata under ``inferq.*`` keys (endpoint,
input file, window, validation errors), so any server can answer for any batch. Once
the job has ended, its output and error files are exported from its Parquet parts by
`worker.export` (the code behind ``inferq results --openai``) as
``file-<job id>-output`` / ``-errors``, once. The job's deadline is the end of its
``completion_window``; rows not done by then are expired (`jobs.expire`).

A line that cannot run on its own is an error row with its own code, made by the job's
reader (`jobs._formats.body_options`). Jobs created by an older inferq kept such
refusals in a `REFUSED_DOCUMENT` beside the job; their error files still read it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import redis
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict

from jobs import (
    JOB_ID,
    InvalidJobSpec,
    JobError,
    JobNotFound,
    JobSpec,
    JobState,
    JobStatus,
    keys,
)
from jobs.spec import new_job_id
from worker.client import Client, NoWorkerForJob
from worker.export import ENDPOINT_KEY, REFUSED_DOCUMENT, export_results, is_chat
from worker.server.auth import check_key
from worker.server.errors import APIError, bad_request, not_found
from worker.server.files import FileStore
from worker.server.pending import LEASE, Pending
from worker.server.validate import CONTENT, Plan, plan

log = logging.getLogger("inferq.serve")

PREFIX = "batch_"
INPUT_KEY, WINDOW_KEY, ERRORS_KEY = "inferq.input_file_id", "inferq.completion_window", \
    "inferq.errors"
#: A completion window: OpenAI's ``24h``, or any count of s, m or h (an inferq extension).
WINDOW = re.compile(r"^([1-9][0-9]{0,6})([smh])\Z")
_UNIT = {"s": 1, "m": 60, "h": 3600}
#: Specs a server keeps in memory (a spec never changes once its job exists).
SPEC_CACHE = 10_000
#: Batches one server validates at once (each reads its input file through).
VALIDATORS = 4
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

    def __init__(self, client: Client, files: FileStore, chunk_size: int, *,
                 lease: float = LEASE) -> None:
        self.client, self.files, self.chunk_size = client, files, chunk_size
        self.pending = Pending(client.redis, lease)
        self._specs: dict[str, JobSpec] = {}
        self._validators = ThreadPoolExecutor(VALIDATORS, thread_name_prefix="inferq-validate")

    def close(self) -> None:
        """Stop validating; batches not yet validated resume on a server once their lease
        runs out."""
        self._validators.shutdown(wait=False, cancel_futures=True)
        self.pending.close()

    def create(self, input_file_id: str, endpoint: str, window: str,
               metadata: dict[str, str]) -> dict[str, Any]:
        """Check the request, record the batch as validating and validate its file in the
        background (`_validate`); the batch as it is now, ``validating``."""
        window_seconds(window)
        if endpoint not in CONTENT:
            raise bad_request(f"endpoint {endpoint!r} is not supported; inferq runs "
                              f"{' and '.join(CONTENT)}", param="endpoint")
        _check_metadata(metadata)
        source = self.files.get(input_file_id)
        if source["purpose"] != "batch":
            raise bad_request(f"file {input_file_id!r} has purpose {source['purpose']!r}, "
                              "not 'batch'", param="input_file_id")
        job_id = new_job_id()
        request = {"input_file_id": input_file_id, "endpoint": endpoint,
                   "completion_window": window, "metadata": metadata,
                   "created_at": time.time()}
        self.pending.add(job_id, request)
        self._validators.submit(self._validate, job_id, request)
        return self._pending_object(job_id, request)

    def resume_stale(self) -> list[str]:
        """Take over the validating batches whose server stopped (their lease ran out):
        validate again those whose job does not exist; fail those whose job was left
        half-submitted. The job ids taken over."""
        taken = []
        for job_id in self.pending.stale():
            if not self.pending.claim(job_id):
                continue  # another server took it
            taken.append(job_id)
            request = self.pending.get(job_id)
            try:
                state = self.client.store.status(job_id).state
            except JobNotFound:
                state = None
            if state is None and request is not None:
                log.info("resuming the validation of batch_%s", job_id)
                self._validators.submit(self._validate, job_id, request)
                continue
            if state == JobState.VALIDATING:  # its server stopped while storing its chunks
                self.client.store.set_state(
                    job_id, JobState.FAILED, only_from=(JobState.VALIDATING,),
                    error="inferq serve stopped while it submitted this batch; create it again")
                self.client.store.drop_inputs(job_id)
            self.pending.finish(job_id)
        return taken

    def _validate(self, job_id: str, request: dict[str, Any]) -> None:
        """Read the batch's input file and submit its job, or record it failed with the
        errors; the request is dropped once the job exists. With Redis down, the lease
        is left to run out and a server's sweep tries again."""
        try:
            try:
                self._submit(job_id, request)
            except redis.RedisError:
                raise
            except Exception as exc:  # the batch must end failed, never stay validating
                log.exception("validating batch_%s failed", job_id)
                self._reject(self._spec(job_id, request, Plan()), [{
                    "code": "validation_failed", "line": None, "param": None,
                    "message": f"inferq could not validate this batch: {exc}"}])
            cancelled = (self.pending.get(job_id) or {}).get("cancelling_at")
            self.pending.finish(job_id)
            if cancelled:
                self.client.cancel(job_id)
        except redis.RedisError as exc:
            log.warning("validating batch_%s: Redis: %s; resumed once its lease runs out",
                        job_id, exc)
            self.pending.release(job_id)

    def _submit(self, job_id: str, request: dict[str, Any]) -> None:
        """What `_validate` does: the file read as a batch, then its job submitted (or
        rejected)."""
        with contextlib.suppress(JobNotFound):
            self.client.store.status(job_id)
            return  # submitted already (a server that stopped before dropping the request)
        input_file_id, endpoint = request["input_file_id"], request["endpoint"]
        found = Plan()
        try:
            source = self.files.get(input_file_id)
            path = self.files.content_path(input_file_id)
        except APIError as exc:  # deleted since the batch was created
            found.error(None, "file_not_found", exc.message, "input_file_id")
            self._reject(self._spec(job_id, request, found), found.errors)
            return
        found = plan(path, endpoint,
                     max_line_bytes=self.client.settings.input_limits().max_line_bytes)
        spec = self._spec(job_id, request, found, source["filename"])
        if not found.errors:
            try:
                self.client.check_servable(spec)
                self.client.submit(spec, str(path), fmt="jsonl", queue_anyway=True)  # checked
            except NoWorkerForJob:
                found.error(None, "model_not_found", f"no live worker serves model "
                            f"{spec.model!r}; served: {', '.join(self.models()) or 'none'}",
                            "body.model")
            except JobError as exc:  # refused by the job's reader: submit created nothing
                found.error(getattr(exc, "line", None), "invalid_file", str(exc))
        if found.errors:
            if found.more_errors:
                found.error(None, "too_many_errors", f"{found.more_errors} more errors")
            self._reject(spec, found.errors)

    def _spec(self, job_id: str, request: dict[str, Any], found: Plan, name: str = ""
              ) -> JobSpec:
        """The batch's job spec; one with model 'unknown' if the file did not name a
        usable model or options (the batch then fails with ``found.errors``)."""
        created, window = request["created_at"], request["completion_window"]
        metadata = request["metadata"] | {ENDPOINT_KEY: request["endpoint"],
                                          INPUT_KEY: request["input_file_id"],
                                          WINDOW_KEY: window}
        common: dict[str, Any] = {"chunk_size": self.chunk_size, "job_id": job_id,
                                  "deadline": created + window_seconds(window),
                                  "metadata": metadata, "input_name": name,
                                  "created_at": created}
        if not found.errors:
            try:
                return JobSpec(op=found.op, model=found.model,
                               calibrate=found.calibrate if found.classify else "none",
                               **common)
            except (InvalidJobSpec, ValueError) as exc:
                found.error(None, "invalid_request", str(exc), "body")
        return JobSpec(op="generate", model="unknown", **common)

    def _reject(self, spec: JobSpec, errors: list[dict[str, Any]]) -> None:
        """Record a batch that failed validation: a failed job with its errors."""
        spec = replace(spec, metadata=spec.metadata | {ERRORS_KEY: json.dumps(errors)})
        store = self.client.store
        if store.create_job(spec, total=0, chunks=0):  # else: another server's, as it is
            store.set_state(spec.job_id, JobState.FAILED,
                            error=f"input file failed validation: {errors[0]['message']}")

    def models(self) -> list[str]:
        return sorted({m for w in self.client.workers() for m in w.get("models", {})})

    def get(self, ident: str) -> dict[str, Any]:
        job_id = job_id_of(ident)
        request = self.pending.get(job_id)  # first: its job may appear meanwhile
        if request is not None:
            return self._pending_object(job_id, request)
        spec = self._spec_of(job_id)
        if spec is None:  # no such job, or a job not submitted as a batch
            raise not_found("batch", ident)
        try:
            status = self.client.store.status(job_id)
        except JobNotFound:
            raise not_found("batch", ident) from None
        return self._object(spec, status)

    def page(self, after: str | None, limit: int) -> dict[str, Any]:
        """Batches newest first (validating ones among them): ``limit`` of them after the
        batch ``after``."""
        pending = {batch_id(job_id): (job_id, request)
                   for job_id, request in self.pending.all().items()}
        if after in pending:  # every job newer than it, and ``limit`` + 1 past it
            newer = int(self.client.redis.zcount(keys.JOBS, pending[after][1]["created_at"],
                                                 "+inf"))
            found, _ = self._newest(None, newer + limit + 1)
        else:
            found, _ = self._newest(after, limit)
        entries: list[tuple[float, str, Any]] = [
            (request["created_at"], ident, (job_id, request))
            for ident, (job_id, request) in pending.items()]
        entries += [(spec.created_at, batch_id(spec.job_id), (spec, status))
                    for spec, status in found if batch_id(spec.job_id) not in pending]
        entries.sort(key=lambda e: (e[0], e[1]), reverse=True)  # as ``inferq:jobs`` orders
        ids = [ident for _, ident, _ in entries]
        start = ids.index(after) + 1 if after in ids else (len(ids) if after else 0)
        data = [self._pending_object(*item) if ident in pending else self._object(*item)
                for _, ident, item in entries[start:start + limit]]
        return {"object": "list", "data": data, "has_more": start + limit < len(entries),
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
        """Cancel a batch; a validating one is cancelled by its validator once its job
        exists (or here, if the job appeared meanwhile)."""
        job_id = job_id_of(ident)
        if self.pending.cancel(job_id):
            with contextlib.suppress(JobNotFound):
                self.client.cancel(job_id)
            return self.get(ident)
        self.get(ident)  # 404 for a stranger
        self.client.cancel(job_id)
        return self.get(ident)

    def _pending_object(self, job_id: str, request: dict[str, Any]) -> dict[str, Any]:
        """A batch still validating, from its create request."""
        created, window = int(request["created_at"]), request["completion_window"]
        cancelling = request.get("cancelling_at")
        unset = dict.fromkeys(("in_progress_at", "finalizing_at", "completed_at", "failed_at",
                               "expired_at", "cancelled_at"))
        return {
            "id": batch_id(job_id), "object": "batch", "endpoint": request["endpoint"],
            "model": None, "input_file_id": request["input_file_id"],
            "completion_window": window, "status": "cancelling" if cancelling else "validating",
            "output_file_id": None, "error_file_id": None, "errors": None,
            "created_at": created, "expires_at": created + window_seconds(window),
            "cancelling_at": int(cancelling) if cancelling else None, **unset,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "usage": _usage(0, 0), "metadata": request["metadata"],
        }

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
            "usage": _usage(prompt, generated),
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


def _usage(prompt: int, generated: int) -> dict[str, Any]:
    return {"input_tokens": prompt, "output_tokens": generated,
            "total_tokens": prompt + generated, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0}}


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
