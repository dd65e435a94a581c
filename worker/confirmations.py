"""Confirmation re-runs: a breached run of a suite with ``alerts.confirm`` asks for one
re-run before anything alerts (`jobs.evaluate.record_evaluation`); this submits it.

Beat submits every waiting request on each tick; `inferq eval run --wait` submits
those of its own runs. A request is taken once (`EvalStore.take_confirmation`), so a
re-run is never submitted twice. The re-run is the same suite on the same target,
judged against the baseline of the run it confirms; it alerts if it still breaches.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from jobs import JobSpec, Suite
from worker.evals import run_specs

log = logging.getLogger("inferq.evals")


def confirmation_spec(suite: Suite, request: dict[str, Any]) -> JobSpec | None:
    """The re-run of ``request``'s run; None when its target is no longer in the suite."""
    for spec in run_specs(suite):
        if (spec.model, spec.backend or "") == (request["model"], request["backend"] or ""):
            return replace(spec, evaluation=(spec.evaluation or {}) | {
                "confirms": request["job_id"], "baseline": request.get("baseline")})
    return None


def submit_confirmations(client: Any, suites: dict[str, Suite],
                         only: set[str] | None = None) -> dict[str, str]:
    """Take and submit the waiting re-runs (of the runs in ``only``, when given): breached
    run's job id -> its re-run's job id. A request whose suite or target is gone is taken
    and dropped, with a log line: nothing can re-run it."""
    submitted = {}
    for request in client.store.evaluations.confirmations():
        job_id = request["job_id"]
        if only is not None and job_id not in only:
            continue
        suite = suites.get(request["suite"])
        spec = confirmation_spec(suite, request) if suite else None
        if not client.store.evaluations.take_confirmation(job_id):
            continue    # another beat or CLI took it
        if spec is None or suite is None:
            log.warning("run %s asked for a confirmation re-run, but suite %s has no "
                        "target %s any more", job_id, request["suite"], request["target"])
            continue
        submitted[job_id] = client.submit(spec, suite.dataset, queue_anyway=True,
                                          mapping=suite.mapping).job_id
        log.info("run %s breached (%s): confirmation re-run %s", job_id, request["breach"],
                 submitted[job_id])
    return submitted
