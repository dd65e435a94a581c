"""The `inferq` command line: the group, its options, and the commands it gathers.

One module per command group, each listing its commands in ``COMMANDS``:

- ``jobs``: submit, run, status, jobs, cancel, results, tail, reconcile, delete;
- ``workers``: worker, workers, backends;
- ``models``: models list / convert / fetch;
- ``evals``: eval run / list / history / report, and beat;
- ``config``: config check (and the checks it makes);
- ``serve``: serve, the OpenAI Batch API (`worker.server`);
- ``exporter``: exporter, the Prometheus metrics (`worker.metrics`).

Shared by them: ``context`` (settings, client, exit codes, Redis errors as one line),
``options`` (the spec options of submit and run), ``view`` (tables, JSON, progress),
``export`` (result files) and ``report`` (an evaluation suite's HTML report). The
Celery runtime in ``worker`` never imports this package.
"""

from __future__ import annotations

from importlib.metadata import version

import click

from worker.cli import config, evals, exporter, jobs, models, serve, workers
from worker.cli.context import MainGroup

__all__ = ["main"]


@click.group(cls=MainGroup)
@click.version_option(version("inferq"), prog_name="inferq")
@click.option("--config", envvar="INFERQ_CONFIG", default=None, help="TOML settings file.")
@click.option("--broker-url", default=None, help="Redis URL (INFERQ_BROKER_URL).")
@click.option("--results", default=None,
              help="Results path or URI, or 'redis' (INFERQ_RESULTS).")
@click.pass_context
def main(ctx: click.Context, config: str | None, broker_url: str | None,
         results: str | None) -> None:
    """inferq: bulk LLM inference over Celery queues, on llama.cpp and MLX workers."""
    ctx.ensure_object(dict).update(config=config, broker_url=broker_url, results=results)


for _group in (jobs, workers, models, evals, config, serve, exporter):
    for _command in _group.COMMANDS:
        main.add_command(_command)
