"""The `inferq` command line.

Exit codes: 0 success, 1 the operation failed, 2 bad usage or input.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from importlib.metadata import version

import click

import inference


def _print_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def _print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    for line in [headers, *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


@click.group()
@click.version_option(version("inferq"), prog_name="inferq")
def main() -> None:
    """inferq: bulk LLM inference over Celery queues, on llama.cpp and MLX workers."""


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def backends(as_json: bool) -> None:
    """Backends registered here, whether each can run, and which is the default."""
    registry = inference.registry()
    try:
        chosen = registry.default().name
    except inference.InferenceError:
        chosen = ""
    rows = [{"name": name, "available": registry.get(name).available(), "default": name == chosen}
            for name in registry.preference_order()]
    if as_json:
        _print_json(rows)
        return
    _print_table(["BACKEND", "AVAILABLE", "DEFAULT"],
                 [[r["name"], "yes" if r["available"] else "no", "*" if r["default"] else ""]
                  for r in rows])


@main.command()
@click.argument("root", type=click.Path(file_okay=False))
@click.option("--max-depth", default=4, show_default=True, help="Directory levels to scan.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def models(root: str, max_depth: int, as_json: bool) -> None:
    """Models found under ROOT: GGUF files and safetensors directories."""
    try:
        found = inference.discover(root, max_depth=max_depth)
    except OSError as err:
        click.echo(f"inferq: {err}", err=True)
        sys.exit(2)
    if as_json:
        _print_json([asdict(m) for m in found])
        return
    _print_table(["PATH", "FORMAT", "TYPE", "BITS", "SIZE"],
                 [[m.path, m.format, m.model_type or "?", str(m.quant_bits or "?"),
                   f"{m.size_bytes / 2**20:.1f} MiB"] for m in found])
