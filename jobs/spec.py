"""The versioned job spec: what to run, on which model, with which options.

A spec is validated when built; `from_dict` rejects unknown fields and wrong
types with a message that names the field, so a bad spec never reaches a queue.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from inference import GenerateOptions
from jobs.errors import InputLocationError, InvalidJobSpec
from jobs.inputs import check_location

SPEC_VERSION = 1
OPS = ("classify", "generate")
DEFAULT_CHUNK_SIZE = 256
MAX_CHUNK_SIZE = 100_000

#: Model ids, backend names and job ids are short names: never paths or URLs. ``\Z``, not
#: ``$``: ``$`` also matches before a trailing newline.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")

_OPTION_FIELDS = {f.name for f in dataclasses.fields(GenerateOptions)}
#: `JobSpec.calibrate` methods (jobs/calibrate.py says what each does).
CALIBRATIONS = ("none", "length", "contextual", "batch")
#: `JobSpec.priority` bounds: the feeder feeds a higher priority first (jobs/feeder.py).
MIN_PRIORITY, MAX_PRIORITY = -100, 100
#: Labels a job may score at most, unless the submitter's setting says otherwise
#: (``INFERQ_MAX_LABELS``): each label costs a decode per chunk.
MAX_LABELS = 1_000


def new_job_id() -> str:
    """A time-ordered, unguessable id: ``job-<unix ms hex>-<random hex>``."""
    return f"job-{int(time.time() * 1000):011x}-{secrets.token_hex(4)}"


def check_name(field_name: str, value: object, *, pattern: re.Pattern[str] = NAME) -> str:
    if not isinstance(value, str) or not pattern.match(value) or ".." in value:
        raise InvalidJobSpec(field_name, f"{value!r} is not a valid name (letters, digits, "
                             "'.', '_', '-'; no paths, URLs or '..')")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class JobSpec:
    """A job: an op over a model, with options. Labels live in ``options.labels``."""

    op: str
    model: str
    backend: str = ""                    #: "" = any backend that serves the model
    options: GenerateOptions = field(default_factory=GenerateOptions)
    chunk_size: int = DEFAULT_CHUNK_SIZE
    deadline: float | None = None        #: unix time after which the job expires
    metadata: dict[str, str] = field(default_factory=dict)
    job_id: str = field(default_factory=new_job_id)
    input_name: str = ""                 #: the input file's name, for people
    created_at: float = field(default_factory=time.time)
    #: Set for evaluation runs: {"suite", "scorer", "scorer_options", "alerts", "slot"};
    #: the job is scored when it finalizes.
    evaluation: dict[str, Any] | None = None
    #: How classify probabilities are calibrated: none | length | contextual | batch
    #: (jobs/calibrate.py)
    calibrate: str = "none"
    #: contextual calibration's content-free input, {"prompt": ...} or {"messages": [...]}
    #: (built from the template at submit); None = derived from each row's chat
    content_free: dict[str, Any] | None = None
    #: label -> prior weight, multiplied into every row's (calibrated) probabilities and
    #: renormalised; a label without one weighs 1. {} = none.
    label_priors: dict[str, float] = field(default_factory=dict)
    #: Where the chunk inputs live (`jobs.inputs`): "" = Redis, "results" = under the
    #: results root, else an absolute path or pyarrow URI. Set at submit from the settings.
    inputs: str = ""
    #: The feeder feeds a queue's waiting jobs of higher priority first, round-robin
    #: within one (jobs/feeder.py); MIN_PRIORITY to MAX_PRIORITY, 0 = normal.
    priority: int = 0
    version: int = SPEC_VERSION

    def __post_init__(self) -> None:
        if self.version != SPEC_VERSION:
            raise InvalidJobSpec("version", f"{self.version!r} is not supported "
                                 f"(this inferq reads version {SPEC_VERSION})")
        if self.op not in OPS:
            raise InvalidJobSpec("op", f"{self.op!r}; use one of {', '.join(OPS)}")
        check_name("model", self.model)
        if self.backend:
            check_name("backend", self.backend)
        check_name("job_id", self.job_id, pattern=JOB_ID)
        if not isinstance(self.chunk_size, int) or not 1 <= self.chunk_size <= MAX_CHUNK_SIZE:
            raise InvalidJobSpec("chunk_size", f"{self.chunk_size!r}; use 1 to {MAX_CHUNK_SIZE:,}")
        if self.op == "generate" and self.options.labels:
            raise InvalidJobSpec("labels", "labels apply to classify jobs only")
        self._check_classify_fields()
        if type(self.priority) is not int or not MIN_PRIORITY <= self.priority <= MAX_PRIORITY:
            raise InvalidJobSpec("priority", f"{self.priority!r}; use a whole number from "
                                 f"{MIN_PRIORITY} to {MAX_PRIORITY} (0 = normal, higher first)")
        if self.inputs != "":
            try:
                check_location(self.inputs)
            except InputLocationError as exc:
                raise InvalidJobSpec("inputs", str(exc)) from None
        if self.deadline is not None and (
                not isinstance(self.deadline, int | float) or self.deadline <= self.created_at):
            raise InvalidJobSpec("deadline", f"{self.deadline!r} must be a unix time after "
                                 "the job's creation")
        if self.evaluation is not None and not (
                isinstance(self.evaluation, dict) and isinstance(self.evaluation.get("suite"), str)
                and isinstance(self.evaluation.get("scorer"), str)):
            raise InvalidJobSpec("evaluation", "must name a suite and a scorer")
        if not isinstance(self.metadata, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.metadata.items()):
            raise InvalidJobSpec("metadata", "must map strings to strings")

    def _check_classify_fields(self) -> None:
        if self.calibrate not in CALIBRATIONS:
            raise InvalidJobSpec("calibrate", f"{self.calibrate!r}; use one of "
                                 f"{', '.join(CALIBRATIONS)}")
        if self.op == "generate" and self.calibrate != "none":
            raise InvalidJobSpec("calibrate", "calibration applies to classify jobs only")
        if not isinstance(self.label_priors, dict) or not all(
                isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool)
                and 0 < v < float("inf") for k, v in self.label_priors.items()):
            raise InvalidJobSpec("label_priors", f"{self.label_priors!r}: map labels to "
                                 "positive numbers")
        if self.label_priors and self.op != "classify":
            raise InvalidJobSpec("label_priors", "priors apply to classify jobs only")

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if data["calibrate"] == "none":
            del data["calibrate"]  # readable by workers that predate calibration
        for name, empty in (("content_free", None), ("label_priors", {}), ("inputs", ""),
                            ("priority", 0)):
            if data[name] == empty:
                del data[name]  # readable by workers that predate the field
        data["options"] = {name: _plain(getattr(self.options, name)) for name in _OPTION_FIELDS}
        return data

    @classmethod
    def from_dict(cls, data: object) -> JobSpec:
        if not isinstance(data, dict):
            raise InvalidJobSpec("spec", f"expected an object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidJobSpec(unknown[0], "unknown field")
        values = dict(data)
        values["options"] = options_from_dict(values.get("options", {}))
        try:
            return cls(**values)
        except TypeError as exc:
            raise InvalidJobSpec("spec", str(exc)) from exc


def check_labels(labels: list[str] | tuple[str, ...], *, limit: int = MAX_LABELS,
                 where: str = "labels") -> tuple[str, ...]:
    """Labels as a job takes them, checked when the job is made: none blank (a label
    of spaces is a mistake, never dropped), none repeated, at most ``limit``.
    `InvalidJobSpec` naming ``where`` and the label otherwise. Labels that only the
    model's tokenizer can tell apart are checked by the engine (``ambiguous_labels``)."""
    for i, label in enumerate(labels):
        if not isinstance(label, str) or not label.strip():
            raise InvalidJobSpec(where, f"label {i + 1} is {label!r}: a label must hold "
                                 "text (write the labels you want scored, e.g. "
                                 "positive,negative)")
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):
        if label in seen:
            raise InvalidJobSpec(where, f"label {label!r} is given twice (labels "
                                 f"{seen[label] + 1} and {i + 1})")
        seen[label] = i
    if len(labels) > limit:
        raise InvalidJobSpec(where, f"{len(labels):,} labels; the limit is {limit:,} "
                             "(INFERQ_MAX_LABELS): scoring costs one decode per label")
    return tuple(labels)


def spec_from_document(doc: dict[str, Any]) -> JobSpec:
    """The spec inside a ``spec.json`` document (which adds input details to it)."""
    names = {f.name for f in dataclasses.fields(JobSpec)}
    return JobSpec.from_dict({k: v for k, v in doc.items() if k in names})


def options_from_dict(data: object) -> GenerateOptions:
    """`GenerateOptions` from JSON, naming the field of any bad value."""
    if isinstance(data, GenerateOptions):
        return data
    if not isinstance(data, dict):
        raise InvalidJobSpec("options", f"expected an object, got {type(data).__name__}")
    unknown = sorted(set(data) - _OPTION_FIELDS)
    if unknown:
        raise InvalidJobSpec(f"options.{unknown[0]}", "unknown option")
    try:
        return GenerateOptions(**data)
    except (ValueError, TypeError) as exc:
        raise InvalidJobSpec("options", str(exc)) from exc


def _plain(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value
