"""Evaluation commands: `inferq eval run|list|history|report` and `inferq beat`."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from jobs import JobError
from worker.cli.context import client_of, fail, settings_of
from worker.cli.view import print_json, print_table
from worker.evals import load, submit_suite

SUITES_OPTION = click.option("--suites", "suites_path", envvar="INFERQ_SUITES",
                             default="evals.toml", show_default=True,
                             type=click.Path(dir_okay=False), help="The suites file.")


def _load(suites_path: str) -> dict[str, Any]:
    try:
        return load(suites_path)
    except JobError as exc:
        fail(str(exc), 2)


def _suite(suites_path: str, name: str) -> Any:
    suites = _load(suites_path)
    if name not in suites:
        fail(f"no suite {name!r} in {suites_path}; suites: "
             f"{', '.join(sorted(suites))}", 2)
    return suites[name]


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _alert(run: dict[str, Any]) -> str:
    if run.get("awaiting_confirmation"):
        return f"(awaiting a confirmation re-run) {run['breach']}"
    return str(run["breach"] or "")


def _interval(run: dict[str, Any]) -> str:
    low, high = run.get("score_low"), run.get("score_high")
    return "-" if low is None or high is None else f"{low:.3f}-{high:.3f}"


@click.group("eval")
def eval_group() -> None:
    """Evaluation suites: run one now, list them, their history, a report."""


@eval_group.command("run")
@click.argument("suite")
@SUITES_OPTION
@click.option("--wait", is_flag=True, help="Wait for the runs and print their scores.")
@click.option("--queue-anyway", is_flag=True, help="Queue even if no live worker serves it.")
@click.pass_context
def eval_run(ctx: click.Context, suite: str, suites_path: str, wait: bool,
             queue_anyway: bool) -> None:
    """Run SUITE now, once per model; prints the job ids."""
    from worker.client import NoWorkerForJob  # on use: Celery (start-up time)

    chosen = _suite(suites_path, suite)
    client = client_of(ctx)
    try:
        jobs = submit_suite(client, chosen, queue_anyway=queue_anyway)
    except (NoWorkerForJob, JobError) as exc:
        fail(str(exc), 2)
    for job_id in jobs:
        click.echo(job_id)
    if not wait:
        return
    sys.exit(_wait_and_show(client, chosen, jobs))


def _wait_and_show(client: Any, suite: Any, jobs: list[str]) -> int:
    """Wait for the runs and the follow-up jobs they ask for (judge jobs, confirmation
    re-runs); print each score. The exit status: 0 when every job completed and no run
    breached, 1 otherwise."""
    from worker.followups import submit_followups

    ok, waiting, every = True, list(jobs), list(jobs)
    follow_ups: dict[str, str] = {}
    while waiting:
        ok = all([client.wait(job_id).state == "completed" for job_id in waiting]) and ok
        new = submit_followups(client, {suite.name: suite}, only=set(waiting))
        follow_ups |= new
        waiting = list(new.values())
        every += waiting
    runs = {r["job_id"]: r for r in client.store.evaluations.history(suite.name, limit=200)
            if r["job_id"] in every}
    for job_id in every:
        run = runs.get(job_id)
        if run is None:
            if job_id not in follow_ups:     # a judged run is shown by its judge job
                click.echo(f"{job_id}: not scored (the job did not complete)")
                ok = False
            continue
        ok = _show(run, follow_ups.get(job_id)) and ok
    return 0 if ok else 1


def _show(run: dict[str, Any], rerun: str | None) -> bool:
    """Print one scored run; False when it breached."""
    interval = ("" if run.get("score_low") is None else
                f" [{run['score_low']:.3f}, {run['score_high']:.3f}]")
    note = ""
    if run.get("unparsed"):
        note += f"  {run['unparsed']} judge replies did not parse"
    if run["breached"]:
        note += f"  ALERT: {run['breach']}"
    elif run.get("awaiting_confirmation"):
        note += (f"  breached, re-running {rerun} to confirm: {run['breach']}" if rerun
                 else f"  breached, awaiting a re-run: {run['breach']}")
    elif run.get("confirms"):
        note += f"  re-run of {run['confirms']}: not confirmed, no alert"
    click.echo(f"{run['target']}: {run['scorer']} {run['score']:.3f}{interval}"
               f"{_versus(run)}{note}")
    return not run["breached"]


def _versus(run: dict[str, Any]) -> str:
    if run.get("compared_job_id") is None:
        return ""
    return (f" ({run['delta']:+.3f} vs {run['compared_job_id']}, {run['test']} "
            f"p={run['p_value']:.2g})")


@eval_group.command("list")
@SUITES_OPTION
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def eval_list(ctx: click.Context, suites_path: str, as_json: bool) -> None:
    """Suites, their schedules and each target's latest score."""
    suites = _load(suites_path)
    evaluations = client_of(ctx).store.evaluations
    rows = []
    for suite in suites.values():
        latest = evaluations.latest(suite.name)
        for target in suite.models:
            run = latest.get(str(target), {})
            rows.append({"suite": suite.name, "target": str(target), "scorer": suite.scorer,
                         "schedule": suite.schedule or (f"every {suite.every:g}s"
                                                        if suite.every else "by hand"),
                         "score": run.get("score"), "score_low": run.get("score_low"),
                         "score_high": run.get("score_high"),
                         "breached": run.get("breached", False),
                         "last_run": run.get("finished_at")})
    if as_json:
        print_json(rows)
        return
    print_table(["SUITE", "TARGET", "SCORER", "SCHEDULE", "LATEST", "95% CI", "ALERT", "WHEN"],
                [[r["suite"], r["target"], r["scorer"], r["schedule"], _fmt(r["score"]),
                  _interval(r),
                  "yes" if r["breached"] else "", time.strftime(
                      "%Y-%m-%d %H:%M", time.localtime(r["last_run"])) if r["last_run"] else "-"]
                 for r in rows])


@eval_group.command("history")
@click.argument("suite")
@click.option("--model", "target", default=None, help="One target (model or model@backend).")
@click.option("--limit", default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def eval_history(ctx: click.Context, suite: str, target: str | None, limit: int,
                 as_json: bool) -> None:
    """SUITE's runs, newest first: scores, throughput, latency, alerts."""
    evaluations = client_of(ctx).store.evaluations
    targets = sorted(evaluations.latest(suite))
    if not targets:
        fail(f"no runs of suite {suite!r} recorded; `inferq eval list` shows the suites", 2)
    if target is not None and target not in targets:
        fail(f"suite {suite!r} has no runs on target {target!r}; its targets: "
             f"{', '.join(targets)}", 2)
    runs = evaluations.history(suite, target, limit)
    if as_json:
        print_json(runs)
        return
    print_table(["FINISHED", "TARGET", "BACKEND", "SCORE", "95% CI", "ACCURACY", "ROWS/S",
                 "S/ROW", "ALERT", "JOB"],
                [[time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["finished_at"])),
                  r["target"], r["backend"], _fmt(r["score"]), _interval(r),
                  _fmt(r["accuracy"]),
                  f"{r['rows_per_sec']:,.1f}", f"{r['seconds_per_row']:.4f}",
                  _alert(r), r["job_id"]] for r in runs])


@click.command("beat")
@SUITES_OPTION
@click.option("--loglevel", default="INFO", show_default=True)
@click.option("--max-interval", type=float, default=60.0, show_default=True,
              help="Longest sleep between schedule checks, in seconds.")
@click.pass_context
def beat(ctx: click.Context, suites_path: str, loglevel: str, max_interval: float) -> None:
    """Run Celery beat with the suites' schedules (one run per slot across beats)."""
    from worker.app import create_app  # on use: Celery (start-up time)

    suites = _load(suites_path)
    scheduled = [s.name for s in suites.values() if s.every or s.schedule]
    if not scheduled:
        fail(f"no suite in {suites_path} has every or schedule", 2)
    settings = settings_of(ctx)
    app = create_app(settings)
    app.conf.inferq_settings = settings
    app.conf.inferq_suites = str(Path(suites_path).resolve())
    app.Beat(scheduler="worker.beat:SuiteScheduler", loglevel=loglevel,
             max_interval=max_interval, schedule="/dev/null").run()


@eval_group.command("report")
@click.argument("suite")
@SUITES_OPTION
@click.option("--out", type=click.Path(dir_okay=False), default="report.html",
              show_default=True, help="The HTML file to write.")
@click.option("--png", "png_dir", type=click.Path(file_okay=False), default=None,
              help="Also write the charts as PNG files into this folder.")
@click.option("--min-score", type=float, default=None,
              help="The threshold to draw; default: the suite's alerts.min_score.")
@click.pass_context
def eval_report(ctx: click.Context, suite: str, suites_path: str, out: str,
                png_dir: str | None, min_score: float | None) -> None:
    """A self-contained HTML report of SUITE's runs: scores, confusion, throughput, alerts.

    Reads the evaluations dataset under the results root; prints the files written.
    """
    from worker.cli.report import NoEvaluationRuns, build_report  # on use: matplotlib

    default = ctx.get_parameter_source("suites_path") is click.core.ParameterSource.DEFAULT
    suites = {} if default and not Path(suites_path).exists() else _load(suites_path)
    if min_score is None and suite in suites:
        min_score = suites[suite].alerts.get("min_score")
    try:
        report = build_report(client_of(ctx).sink, suite, min_score=min_score)
    except NoEvaluationRuns as exc:
        known = (f"; {suite!r} is not a suite in {suites_path} (suites: "
                 f"{', '.join(sorted(suites))})" if suites and suite not in suites else "")
        fail(f"{exc}{known}", 2)
    for path in report.write(Path(out), Path(png_dir) if png_dir else None):
        click.echo(path)


#: The commands this module adds to `inferq`.
COMMANDS = [eval_group, beat]
