"""`inferq beat`: Celery beat with a scheduler that runs evaluation suites.

Each tick finds every suite's latest slot (the latest time its ``every`` or cron
``schedule`` fell due). A slot runs once: the beat that claims it in Redis
(``SET NX``, remembered for 40 days) submits the suite's runs; any other beat,
at the same time or after a restart, finds it claimed. A slot missed while no
beat was running is run when beat starts again, but only the latest one: a
beat down for three days runs a daily suite once on restart, not three times.
Each tick also submits the follow-up jobs runs ask for (`worker.followups`: judge jobs
of judge-scored suites, confirmation re-runs of breached runs with ``alerts.confirm``),
each once across beats.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery.beat import Scheduler

from worker.evals import latest_slot, load, submit_suite
from worker.followups import submit_followups

log = logging.getLogger("inferq.beat")

MIN_SLEEP = 0.5


class SuiteScheduler(Scheduler):  # type: ignore[misc]
    """Runs suites on their schedules; configured by ``app.conf.inferq_suites``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from worker.client import Client

        settings = self.app.conf.inferq_settings
        self.suites = load(self.app.conf.inferq_suites)
        self.client = Client(settings)
        self.evaluations = self.client.store.evaluations
        self.seen: dict[str, int] = {}

    def setup_schedule(self) -> None:
        """The suites are the schedule; Celery's own beat_schedule is not used."""

    def tick(self, *args: Any, **kwargs: Any) -> float:
        now = time.time()
        for suite in self.suites.values():
            slot = latest_slot(suite, now)
            if slot is None or self.seen.get(suite.name) == slot:
                continue
            self.seen[suite.name] = slot
            if not self.evaluations.claim_slot(suite.name, slot):
                log.info("suite %s slot %s already claimed", suite.name, slot)
                continue
            try:
                jobs = submit_suite(self.client, suite, slot=slot, queue_anyway=True)
                log.info("suite %s slot %s: submitted %s", suite.name, slot, ", ".join(jobs))
            except Exception:
                log.exception("suite %s slot %s: submission failed", suite.name, slot)
        try:
            submit_followups(self.client, self.suites)
        except Exception:
            log.exception("follow-up jobs (judge, confirm): submission failed")
        return max(MIN_SLEEP, min(self._next_due(now) - time.time(), float(self.max_interval)))

    def _next_due(self, now: float) -> float:
        intervals = [s.every for s in self.suites.values() if s.every]
        nearest = [((now // e) + 1) * e for e in intervals]
        if any(s.schedule for s in self.suites.values()):
            nearest.append((now // 60 + 1) * 60)  # cron slots fall on minutes
        return min(nearest, default=now + float(self.max_interval))
