"""Follow-up jobs that evaluation runs ask for, submitted from the worker side.

Two kinds (`jobs.eval_store.EvalStore.request`): "confirm", one re-run of a breached run
of a suite with ``alerts.confirm``, judged against the breached run's baseline; and
"judge", the judge job of a run of a judge-scored suite (`jobs.judge`): the judge model
grades each answered row, its prompt the suite's rubric filled in with the row's prompt
(as the model saw it), answer and expected answer. Beat submits every waiting request
on each tick; `inferq eval run --wait` submits those of its own runs. A request is
taken once (`EvalStore.take`), so a follow-up is never submitted twice. Each is an
ordinary job, routed to its model's queue like any other.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import replace
from typing import Any

from inference import GenerateOptions
from jobs import JobSpec, Suite
from jobs.judge import JUDGE_MAX_TOKENS, render
from jobs.readers import read_input
from worker.evals import run_specs

log = logging.getLogger("inferq.evals")

KINDS = ("judge", "confirm")


def confirmation_spec(suite: Suite, request: dict[str, Any]) -> JobSpec | None:
    """The re-run of ``request``'s run; None when its target is no longer in the suite."""
    for spec in run_specs(suite):
        if (spec.model, spec.backend or "") == (request["model"], request["backend"] or ""):
            return replace(spec, evaluation=(spec.evaluation or {}) | {
                "confirms": request["job_id"], "baseline": request.get("baseline")})
    return None


def judge_spec(suite: Suite, request: dict[str, Any]) -> JobSpec:
    """The judge job of ``request``'s run: greedy, a few tokens, on the judge model."""
    model, _, backend = str(suite.scorer_options["model"]).partition("@")
    evaluation = suite.evaluation(request.get("slot")) | {
        "judged_job_id": request["job_id"], "target": request["target"],
        "judged_model": request["model"], "judged_backend": request["backend"],
        "judged_op": request["op"], "confirms": request.get("confirms"),
        "baseline": request.get("baseline")}
    return JobSpec(op="generate", model=model, backend=backend,
                   options=GenerateOptions(max_tokens=JUDGE_MAX_TOKENS, temperature=0.0),
                   chunk_size=suite.chunk_size,
                   metadata={"suite": suite.name, "judges": request["job_id"]},
                   evaluation=evaluation, input_name=suite.dataset, created_at=time.time(),
                   priority=suite.priority)


def write_judge_input(client: Any, suite: Suite, job_id: str, path: str) -> int:
    """Write the judge job's rows for run ``job_id`` (JSON Lines); how many. Rows the
    judged model failed on get none: they are error rows of the judged run."""
    prompts = {}
    for row in read_input(suite.dataset, mapping=suite.mapping):
        prompts[row.custom_id] = row.prompt if row.prompt is not None else "\n".join(
            m.content for m in row.messages or ())
    results = client.sink.read_results(job_id)
    rubric = str(suite.scorer_options["rubric"])
    written = 0
    with open(path, "w", encoding="utf-8") as out:
        for cid, text, err, expected in zip(*(results.column(c).to_pylist() for c in (
                "custom_id", "text", "error_code", "expected")), strict=True):
            if err:
                continue
            prompt = render(rubric, prompt=prompts.get(cid, ""), answer=text or "",
                            expected=expected or "")
            out.write(json.dumps({"custom_id": cid, "prompt": prompt,
                                  "expected": expected or ""}) + "\n")
            written += 1
    return written


def _submit(client: Any, kind: str, suite: Suite, request: dict[str, Any]) -> str | None:
    if kind == "confirm":
        spec = confirmation_spec(suite, request)
        if spec is None:
            log.warning("run %s asked for a confirmation re-run, but suite %s has no "
                        "target %s any more", request["job_id"], suite.name, request["target"])
            return None
        return str(client.submit(spec, suite.dataset, queue_anyway=True,
                                 mapping=suite.mapping).job_id)
    client.collect(request["job_id"])     # with results via Redis: the parts, here
    fd, path = tempfile.mkstemp(prefix="inferq-judge-", suffix=".jsonl")
    os.close(fd)
    try:
        write_judge_input(client, suite, request["job_id"], path)
        return str(client.submit(judge_spec(suite, request), path, fmt="jsonl",
                                 queue_anyway=True, keep_path=False).job_id)
    finally:
        os.unlink(path)


def submit_followups(client: Any, suites: dict[str, Suite],
                     only: set[str] | None = None) -> dict[str, str]:
    """Take and submit the waiting follow-up jobs (of the runs in ``only``, when given):
    asking run's job id -> the follow-up's job id. A request whose suite is gone (or no
    longer judge-scored) is taken and dropped, with a log line: nothing can run it."""
    submitted = {}
    for kind in KINDS:
        for request in client.store.evaluations.requests(kind):
            job_id = request["job_id"]
            if only is not None and job_id not in only:
                continue
            if not client.store.evaluations.take(kind, job_id):
                continue    # another beat or CLI took it
            suite = suites.get(request["suite"])
            if suite is None or (kind == "judge" and suite.scorer != "judge"):
                log.warning("run %s asked for a %s job, but suite %s is gone or changed",
                            job_id, kind, request["suite"])
                continue
            follow_up = _submit(client, kind, suite, request)
            if follow_up is not None:
                submitted[job_id] = follow_up
                log.info("run %s: %s job %s", job_id, kind, follow_up)
    return submitted
