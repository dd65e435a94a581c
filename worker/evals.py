"""Evaluation runs from the worker side: load suites (with Celery's cron parser),
submit a suite's runs, and find the schedule slot a run belongs to."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from jobs import JobSpec, Suite, load_suites

#: How far back the latest slot of a cron schedule is looked for.
CRON_LOOKBACK = timedelta(days=366)


def crontab_of(expression: str) -> Any:
    from celery.schedules import crontab

    minute, hour, day_of_month, month, day_of_week = expression.split()
    return crontab(minute=minute, hour=hour, day_of_month=day_of_month,
                   month_of_year=month, day_of_week=day_of_week)


def check_cron(expression: str) -> None:
    """Raise ValueError unless Celery's crontab parses ``expression``."""
    crontab_of(expression)


def load(path: str) -> dict[str, Suite]:
    """The suites of a file, cron expressions checked by Celery's parser."""
    return load_suites(path, check_cron=check_cron)


def latest_slot(suite: Suite, now: float) -> int | None:
    """The unix time of the latest scheduled slot at or before ``now`` (None: unscheduled).

    ``every``: multiples of the interval since the epoch. ``schedule``: the latest
    minute (UTC) that the cron expression matches.
    """
    if suite.every:
        return int(math.floor(now / suite.every) * suite.every)
    if not suite.schedule:
        return None
    cron = crontab_of(suite.schedule)
    moment = datetime.fromtimestamp(now, UTC).replace(second=0, microsecond=0)
    limit = moment - CRON_LOOKBACK
    while moment > limit:
        if (moment.minute in cron.minute and moment.hour in cron.hour
                and moment.isoweekday() % 7 in cron.day_of_week
                and moment.day in cron.day_of_month and moment.month in cron.month_of_year):
            return int(moment.timestamp())
        moment -= timedelta(minutes=1)
    return None


def run_specs(suite: Suite, slot: float | None = None) -> list[JobSpec]:
    """One job spec per target of the suite."""
    now = time.time()
    content_free = suite.mapping.content_free() if suite.calibrate == "contextual" else None
    return [JobSpec(op=suite.op, model=t.model, backend=t.backend, options=suite.options,
                    chunk_size=suite.chunk_size, metadata={"suite": suite.name},
                    evaluation=suite.evaluation(slot), input_name=suite.dataset,
                    created_at=now, calibrate=suite.calibrate, content_free=content_free,
                    label_priors=suite.label_priors, priority=suite.priority)
            for t in suite.models]


def submit_suite(client: Any, suite: Suite, *, slot: float | None = None,
                 queue_anyway: bool = False) -> list[str]:
    """Submit the suite's runs; their job ids."""
    return [client.submit(spec, suite.dataset, queue_anyway=queue_anyway,
                          mapping=suite.mapping).job_id for spec in run_specs(suite, slot)]
