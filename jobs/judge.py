"""The judge scorer: another model grades each answer of an evaluation run.

A suite with ``scorer = { name = "judge", model = "<judge id>[@backend]", rubric = "...",
scale = 5 }`` runs in two jobs. The evaluation run (the suite's models answering the
dataset) finalizes and asks for judging (`jobs.eval_store.EvalStore.request_judging`);
the judge job is then submitted like any other job (`worker.judge`), routed to the
judge model's queue: one row per answered row, its prompt the rubric with
``{prompt}``, ``{answer}`` and ``{expected}`` filled in. When the judge job finalizes,
its replies are scored here and recorded as the evaluation of the judged run's target.

Replies are parsed strictly: the whole reply, stripped, must be an integer from 1 to
``scale``; anything else ("4/5", "Score: 4", "four") is an error row, counted in
``errors`` and in ``unparsed``, and scores 0 (as do rows the judged model failed on).
A row's score is ``(grade - 1) / (scale - 1)``; the headline is the mean over rows.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar

from jobs.scorers import Score
from jobs.spec import NAME

PLACEHOLDERS = ("{prompt}", "{answer}", "{expected}")
DEFAULT_SCALE = 5
#: What a judge job may generate: a grade is a few characters.
JUDGE_MAX_TOKENS = 8
_GRADE = re.compile(r"^[0-9]{1,3}$")


def check_options(options: Mapping[str, object]) -> str | None:
    """Why the judge options are not usable, or None: a judge model id, a rubric holding
    ``{answer}``, an integer scale of at least 2."""
    model = options.get("model")
    if not isinstance(model, str) or not all(NAME.match(part) for part in model.split("@", 1)):
        return f"option 'model' is required: the judge's model id (or id@backend), got {model!r}"
    rubric = options.get("rubric")
    if not isinstance(rubric, str) or "{answer}" not in rubric:
        return ("option 'rubric' is required: a prompt template with {answer} (and "
                f"optionally {{prompt}} and {{expected}}), got {rubric!r}")
    scale = options.get("scale", DEFAULT_SCALE)
    if not isinstance(scale, int) or isinstance(scale, bool) or not 2 <= scale <= 100:
        return f"option 'scale' is the top grade, an integer from 2 to 100, got {scale!r}"
    return None


def render(rubric: str, *, prompt: str, answer: str, expected: str) -> str:
    """The rubric with its placeholders filled in (any other braces are left as written)."""
    for name, value in zip(PLACEHOLDERS, (prompt, answer, expected), strict=True):
        rubric = rubric.replace(name, value)
    return rubric


def parse_grade(reply: str | None, scale: int) -> int | None:
    """The grade a reply gives, or None when it is not exactly an integer in 1..scale."""
    if reply is None:
        return None
    text = reply.strip()
    if not _GRADE.match(text):
        return None
    grade = int(text)
    return grade if 1 <= grade <= scale else None


@dataclass(frozen=True, slots=True)
class JudgeScorer:
    """Scores ``(judge reply or None, expected)`` pairs; None = the judged model or the
    judge failed on the row. Graded: `row_score` is in [0, 1], ``correct`` counts rows
    given the top grade."""

    model: str
    rubric: str
    scale: int = DEFAULT_SCALE
    name: ClassVar[str] = "judge"

    def row_score(self, reply: str | None) -> float:
        grade = parse_grade(reply, self.scale)
        return 0.0 if grade is None else (grade - 1) / (self.scale - 1)

    def correct(self, prediction: str | None, expected: str) -> bool:
        return parse_grade(prediction, self.scale) == self.scale

    def score(self, pairs: Iterable[tuple[str | None, str]]) -> Score:
        n = errors = unparsed = top = 0
        total = 0.0
        for reply, _ in pairs:
            n += 1
            grade = parse_grade(reply, self.scale)
            if grade is None:
                errors += 1
                unparsed += reply is not None
                continue
            total += (grade - 1) / (self.scale - 1)
            top += grade == self.scale
        value = total / n if n else 0.0
        return Score(scorer=self.name, value=value, n=n, correct=top, errors=errors,
                     accuracy=value, unparsed=unparsed)
