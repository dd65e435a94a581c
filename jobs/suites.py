"""Evaluation suites from a TOML file.

    [suites.sentiment]
    models = ["qwen3-1.7b", "qwen3-1.7b@metal"]   # an id, or id@backend to pin one
    dataset = "data/sentiment.jsonl"               # prompt or messages, and expected
    # or a table of other columns, mapped as `inferq submit` maps them:
    # template = "Review: {text}\nSentiment:"  system = "..."
    # id_column = "id"  expected_column = "sentiment"
    op = "classify"
    labels = [" positive", " negative"]
    scorer = "label"                               # or { name = "regex", pattern = "..." }
    every = "6h"                                   # or schedule = "0 2 * * *" (cron)
    chunk_size = 256
    options = { max_tokens = 16 }
    alerts = { min_score = 0.8, max_drop = 0.05 }    # also significance = 0.05, confirm
    priority = 10                                  # fed before lower ones (default 0)

A mistake rejects the whole file with the file, the line and what is wrong.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inference import GenerateOptions
from jobs.errors import InvalidJobSpec, JobError
from jobs.mapping import InputMapping
from jobs.readers import read_input
from jobs.scorers import make_scorer
from jobs.spec import MAX_PRIORITY, MIN_PRIORITY, NAME, OPS, JobSpec, options_from_dict

_MAPPING_KEYS = ("template", "system", "id_column", "expected_column")
_KEYS = {"models", "dataset", "op", "labels", "scorer", "every", "schedule", "chunk_size",
         "options", "alerts", "calibrate", "priors", "priority", *_MAPPING_KEYS}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class SuiteError(JobError, ValueError):
    """A suite file that cannot be used; names the file, the line and the problem."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        self.line = line
        super().__init__(f"{path}, line {line}: {message}" if line else f"{path}: {message}")


@dataclass(frozen=True, slots=True)
class Target:
    model: str
    backend: str = ""

    def __str__(self) -> str:
        return f"{self.model}@{self.backend}" if self.backend else self.model


@dataclass(frozen=True, slots=True, kw_only=True)
class Suite:
    name: str
    models: tuple[Target, ...]
    dataset: str
    op: str
    scorer: str
    scorer_options: dict[str, Any] = field(default_factory=dict)
    options: GenerateOptions = field(default_factory=GenerateOptions)
    every: float | None = None          #: seconds between runs
    schedule: str | None = None         #: cron expression (minute hour day month weekday)
    chunk_size: int = 256
    alerts: dict[str, float] = field(default_factory=dict)
    mapping: InputMapping = field(default_factory=InputMapping)  #: how dataset rows are read
    calibrate: str = "none"             #: classify calibration (jobs/calibrate.py)
    label_priors: dict[str, float] = field(default_factory=dict)
    priority: int = 0                   #: its runs' `JobSpec.priority`

    def evaluation(self, slot: float | None) -> dict[str, Any]:
        """The ``evaluation`` part of each run's job spec."""
        return {"suite": self.name, "scorer": self.scorer,
                "scorer_options": self.scorer_options, "alerts": self.alerts, "slot": slot}


#: Checks a cron expression, raising ValueError; the worker layer supplies Celery's.
CronCheck = Callable[[str], None]


def load_suites(path: str, check_cron: CronCheck | None = None) -> dict[str, Suite]:
    """Every suite in the file; `SuiteError` on the first problem."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SuiteError(path, None, f"cannot read: {exc.strerror or exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError(path, getattr(exc, "lineno", None), f"not TOML: {exc}") from exc
    suites = data.get("suites")
    if not isinstance(suites, dict) or not suites:
        raise SuiteError(path, None, "no [suites.<name>] tables")
    base = Path(path).resolve().parent
    return {name: _suite(path, text, base, name, table, check_cron)
            for name, table in suites.items()}


def _line(text: str, suite: str, key: str | None) -> int | None:
    """The line of ``key`` inside ``[suites.<suite>]`` (or of the header)."""
    lines = text.splitlines()
    header = re.compile(rf"^\s*\[\s*suites\.{re.escape(suite)}\s*\]")
    start = next((i for i, line in enumerate(lines) if header.match(line)), None)
    if start is None:
        return None
    if key is None:
        return start + 1
    pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
    for i in range(start + 1, len(lines)):
        if lines[i].lstrip().startswith("["):
            break
        if pattern.match(lines[i]):
            return i + 1
    return start + 1


def _suite(path: str, text: str, base: Path, name: str, table: object,
           check_cron: CronCheck | None) -> Suite:
    def fail(key: str | None, message: str) -> SuiteError:
        return SuiteError(path, _line(text, name, key), f"suite {name!r}: {message}")

    if not isinstance(table, dict):
        raise fail(None, "must be a table")
    if not NAME.match(name):
        raise fail(None, "suite names are letters, digits, '.', '_' and '-'")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise fail(unknown[0], f"unknown key {unknown[0]!r}; keys: {', '.join(sorted(_KEYS))}")
    for key in ("models", "dataset", "scorer"):
        if key not in table:
            raise fail(None, f"{key} is required")
    op = table.get("op", "classify")
    if op not in OPS:
        raise fail("op", f"op {op!r}; use one of {', '.join(OPS)}")
    scorer, scorer_options = _scorer(table["scorer"], fail)
    options = _options(table, op, fail)
    dataset = str((base / str(table["dataset"])).resolve())
    mapping = _mapping(table, fail)
    _check_dataset(dataset, mapping, fail)
    every, schedule = _schedule(table, check_cron, fail)
    chunk_size = table.get("chunk_size", 256)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise fail("chunk_size", f"{chunk_size!r} must be a positive integer")
    priority = table.get("priority", 0)
    if type(priority) is not int or not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise fail("priority", f"{priority!r} must be a whole number from {MIN_PRIORITY} to "
                   f"{MAX_PRIORITY} (0 = normal, higher is fed first)")
    return Suite(name=name, models=_targets(table["models"], fail), dataset=dataset, op=op,
                 scorer=scorer, scorer_options=scorer_options, options=options, every=every,
                 schedule=schedule, chunk_size=chunk_size, alerts=_alerts(table, fail),
                 mapping=mapping, priority=priority, **_calibration(table, op, fail))


Fail = Callable[[str | None, str], SuiteError]


def _calibration(table: dict[str, Any], op: str, fail: Fail) -> dict[str, Any]:
    """``calibrate`` and ``priors`` (a table of label = weight), checked as a job's are."""
    calibrate, priors = table.get("calibrate", "none"), table.get("priors", {})
    try:
        JobSpec(op=op, model="suite", calibrate=calibrate, label_priors=priors)
    except InvalidJobSpec as exc:
        raise fail("priors" if exc.field == "label_priors" else "calibrate",
                   str(exc)) from exc
    return {"calibrate": calibrate, "label_priors": dict(priors)}


def _targets(models: object, fail: Fail) -> tuple[Target, ...]:
    items = [models] if isinstance(models, str) else models
    if not isinstance(items, list) or not items:
        raise fail("models", "models is a list of model ids")
    targets = []
    for item in items:
        model, _, backend = str(item).partition("@")
        if not NAME.match(model) or (backend and not NAME.match(backend)):
            raise fail("models", f"{item!r} is not a model id (or id@backend)")
        targets.append(Target(model, backend))
    return tuple(targets)


def _scorer(value: object, fail: Fail) -> tuple[str, dict[str, Any]]:
    options: dict[str, Any] = {}
    if isinstance(value, dict):
        options = {k: v for k, v in value.items() if k != "name"}
        value = value.get("name", "")
    try:
        make_scorer(str(value), options)
    except ValueError as exc:
        raise fail("scorer", str(exc)) from exc
    return str(value), options


def _options(table: dict[str, Any], op: str, fail: Fail) -> GenerateOptions:
    try:
        options = options_from_dict(dict(table.get("options", {}))
                                    | {"labels": list(table.get("labels", []))})
    except (JobError, TypeError, ValueError) as exc:
        raise fail("labels" if "labels" in str(exc) else "options", str(exc)) from exc
    if op == "generate" and options.labels:
        raise fail("labels", "labels apply to classify suites only")
    return options


def _schedule(table: dict[str, Any], check_cron: CronCheck | None,
              fail: Fail) -> tuple[float | None, str | None]:
    every, schedule = table.get("every"), table.get("schedule")
    if every is not None and schedule is not None:
        raise fail("every", "give either every or schedule, not both")
    if every is not None:
        return _duration(every, fail), None
    if schedule is None:
        return None, None
    if len(str(schedule).split()) != 5:
        raise fail("schedule", f"{schedule!r}: a cron expression has 5 fields "
                               "(minute hour day-of-month month day-of-week)")
    try:
        if check_cron is not None:
            check_cron(str(schedule))
    except ValueError as exc:
        raise fail("schedule", f"{schedule!r}: {exc}") from exc
    return None, str(schedule)


def _alerts(table: dict[str, Any], fail: Fail) -> dict[str, float]:
    """min_score, max_drop, significance: numbers; confirm: true or false (as 1.0 or 0.0)."""
    alerts = table.get("alerts", {})
    numbers = {"min_score", "max_drop", "significance"}
    if not isinstance(alerts, dict) or set(alerts) - numbers - {"confirm"} or not all(
            isinstance(v, int | float) and not isinstance(v, bool)
            for k, v in alerts.items() if k != "confirm"):
        raise fail("alerts", "alerts holds numbers min_score, max_drop and significance, "
                             "and confirm = true or false")
    if not isinstance(alerts.get("confirm", False), bool):
        raise fail("alerts", f"alerts.confirm is true or false, got {alerts['confirm']!r}")
    if not 0 <= alerts.get("significance", 0.05) < 1:
        raise fail("alerts", f"alerts.significance is a p-value threshold in [0, 1) "
                             f"(0 = no significant-drop alert), got {alerts['significance']!r}")
    return {k: float(v) for k, v in alerts.items()}


def _mapping(table: dict[str, Any], fail: Fail) -> InputMapping:
    try:
        return InputMapping.from_dict({k: table[k] for k in _MAPPING_KEYS if k in table})
    except InvalidJobSpec as exc:
        key = exc.field if exc.field in _MAPPING_KEYS else None
        raise fail(key, str(exc).removeprefix("invalid job spec: ")) from exc


def _check_dataset(dataset: str, mapping: InputMapping, fail: Fail) -> None:
    """The dataset must read, and its rows must carry expected answers."""
    try:
        first = next(iter(read_input(dataset, mapping=mapping)), None)
    except JobError as exc:
        raise fail("dataset", str(exc)) from exc
    if first is None:
        raise fail("dataset", f"{dataset} has no rows")
    if first.expected is None:
        column = mapping.expected_column or "expected"
        raise fail("dataset", f"{dataset} has no expected answers (a {column!r} field or "
                              "column is required to score a run; expected_column names "
                              "another)")


def _duration(value: object, fail: Fail) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    match = _DURATION.match(str(value).strip())
    if not match:
        raise fail("every", f"{value!r}: use seconds or a duration like 30m, 6h, 1d")
    return float(match.group(1)) * _UNITS[match.group(2)]
