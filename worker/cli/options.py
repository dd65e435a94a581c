"""Options shared by `inferq submit` and `inferq run`, and the spec they build."""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Callable
from typing import Any

import click

from jobs import DEFAULT_CHUNK_SIZE, JobSpec, options_from_dict
from jobs.mapping import InputMapping
from jobs.spec import CALIBRATIONS, MAX_LABELS, check_labels
from worker.cli.stdio import STDIN, STDIN_NAME

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str) -> float:
    match = _DURATION.match(value.strip())
    if not match:
        raise click.BadParameter(f"{value!r}: use seconds or a duration like 30m, 2h, 1d")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise click.BadParameter(f"{value!r}: a deadline must be in the future",
                                 param_hint="--deadline")
    return seconds


def job_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The spec options, in the order ``--help`` shows them."""
    decorators = [
        click.argument("op", type=click.Choice(["classify", "generate"])),
        click.argument("input", type=click.Path(dir_okay=False, allow_dash=True)),
        click.option("--model", "-m", "model_id", required=True,
                     help="Model id, as workers' catalogs name it."),
        click.option("--backend", "-b", default="", help="Pin a backend (default: any)."),
        click.option("--labels", "-l", default="",
                     help="Comma-separated labels (classify), stored as written; after a "
                     "prompt not ending in whitespace each is scored as a new word "
                     "(' positive')."),
        click.option("--calibrate", type=click.Choice(CALIBRATIONS), default="none",
                     show_default=True,
                     help="Classify probabilities: none (the engine's), length (per label "
                     "token), contextual (divided by those of the prompt with N/A for the "
                     "row's text), batch (divided by the job's mean per label)."),
        click.option("--priors", default="",
                     help="Label prior weights, e.g. 'positive=1,negative=3': multiplied "
                     "into each row's probabilities (a label without one weighs 1)."),
        click.option("--max-tokens", type=int, default=256, show_default=True),
        click.option("--temperature", type=float, default=0.0, show_default=True,
                     help="0 = greedy."),
        click.option("--top-k", type=int, default=0, help="0 = off."),
        click.option("--top-p", type=float, default=0.0, help="0 = off."),
        click.option("--seed", type=int, default=None, help="Reproducible sampling."),
        click.option("--stop", multiple=True, help="Stop string (repeatable)."),
        click.option("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, show_default=True,
                     help="Rows per chunk (one queue message each)."),
        click.option("--priority", type=int, default=0, show_default=True,
                     help="Feed this job's chunks before those of lower priority waiting "
                     "for the same workers (-100 to 100; round-robin within one)."),
        click.option("--deadline", default=None,
                     help="Expire unfinished rows after this long (e.g. 2h)."),
        click.option("--format", "fmt", default=None,
                     type=click.Choice(["jsonl", "csv", "parquet", "text"]),
                     help="Input format (default: from the file name; for - (stdin), "
                     "JSONL or Parquet by their first bytes)."),
        click.option("--template", default=None,
                     help=r"Build each prompt from the row's fields by name, e.g. "
                     r"'Review: {text}\nSentiment:' ({{ and }} are literal braces; \n a "
                     "newline)."),
        click.option("--system", default=None,
                     help="A system message: each row becomes a chat (system, then the "
                     "prompt as the user's), rendered by the model's chat template."),
        click.option("--id-column", default=None,
                     help="The field holding each row's custom id (default: custom_id, "
                     "else id, else the row number)."),
        click.option("--expected-column", default=None,
                     help="The field holding each row's expected answer, kept in the "
                     "results (default: expected)."),
        click.option("--meta", multiple=True, help="KEY=VALUE metadata (repeatable)."),
        click.option("--job-id", default=None, help="Choose the job id (default: generated)."),
    ]
    for decorator in reversed(decorators):
        fn = decorator(fn)
    return fn


def unescape(text: str) -> str:
    r"""``\n``, ``\t`` and ``\\`` as the characters they name: a shell argument cannot
    easily hold a newline. Any other backslash stays as it is."""
    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t"}.get(m[1], "\\"), text)


def build_mapping(kw: dict[str, Any]) -> InputMapping:
    """The `InputMapping` of the shared options; raises InvalidJobSpec naming the option."""
    return InputMapping(
        template=unescape(kw["template"]) if kw["template"] is not None else None,
        system=unescape(kw["system"]) if kw["system"] is not None else None,
        id_column=kw["id_column"], expected_column=kw["expected_column"])


def max_labels() -> int:
    """``INFERQ_MAX_LABELS``, or the default `jobs.spec.MAX_LABELS`."""
    value = os.environ.get("INFERQ_MAX_LABELS", "")
    if not value:
        return MAX_LABELS
    if not value.isdigit() or int(value) < 1:
        raise click.BadParameter(f"INFERQ_MAX_LABELS={value!r}: give a positive integer")
    return int(value)


def parse_priors(text: str) -> dict[str, float]:
    """``label=weight,...`` as a dict; `click.BadParameter` naming the bad item."""
    priors: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        label, sep, weight = item.rpartition("=")
        try:
            value = float(weight)
        except ValueError:
            value = -1.0
        if not sep or not label or not 0 < value < float("inf"):
            raise click.BadParameter(f"{item!r}: use LABEL=WEIGHT with a positive weight",
                                     param_hint="--priors")
        priors[label] = value
    return priors


def with_mapping(spec: JobSpec, mapping: InputMapping) -> JobSpec:
    """``spec`` with what it takes from the input mapping: contextual calibration's
    content-free input, built from the template and the system message."""
    if spec.calibrate != "contextual":
        return spec
    return dataclasses.replace(spec, content_free=mapping.content_free())


def build_spec(kw: dict[str, Any]) -> JobSpec:
    """A `JobSpec` from the shared options; raises InvalidJobSpec naming the field."""
    options = options_from_dict({
        "max_tokens": kw["max_tokens"], "temperature": kw["temperature"], "top_k": kw["top_k"],
        "top_p": kw["top_p"], "seed": kw["seed"], "stop_strings": list(kw["stop"]),
        # Labels keep their spaces: " positive" and "positive" tokenize differently.
        "labels": check_labels(kw["labels"].split(","), limit=max_labels(),
                               where="--labels") if kw["labels"] != "" else [],
    })
    metadata = {}
    for item in kw["meta"]:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r}: use KEY=VALUE", param_hint="--meta")
        metadata[key] = value
    now = time.time()
    extra = {"job_id": kw["job_id"]} if kw["job_id"] else {}
    return JobSpec(op=kw["op"], model=kw["model_id"], backend=kw["backend"], options=options,
                   calibrate=kw["calibrate"], label_priors=parse_priors(kw["priors"]),
                   chunk_size=kw["chunk_size"], metadata=metadata, created_at=now,
                   priority=kw["priority"],
                   deadline=now + parse_duration(kw["deadline"]) if kw["deadline"] else None,
                   input_name=STDIN_NAME if kw["input"] == STDIN else kw["input"], **extra)
