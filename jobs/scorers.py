"""Scorers: how well a job's outputs match the expected answers of an evaluation run.

A scorer takes ``(prediction, expected)`` pairs, the prediction ``None`` for a row the model
failed on (an error row: counted in ``n`` and ``errors``, and wrong), and returns a `Score`.
``make_scorer(name, options)`` builds one of `SCORERS`; `OPTIONS` lists their options.
No rows give ``n=0`` and every score 0.0: there is nothing to be right about.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, cast, runtime_checkable

SCORERS: tuple[str, ...] = ("label", "exact", "contains", "regex", "numeric", "judge")

#: The predicted column of the confusion matrix that counts error rows.
ERROR_LABEL = "<error>"

_TEXT_OPTIONS: dict[str, object] = {"strip": True, "case_sensitive": False,
                                    "collapse_whitespace": True}
#: Each scorer's options and their defaults; ``None`` = required.
OPTIONS: Mapping[str, Mapping[str, object]] = {
    "label": {"strip": True, "case_sensitive": True},
    "exact": _TEXT_OPTIONS,
    "contains": _TEXT_OPTIONS,
    "regex": {"pattern": None, **_TEXT_OPTIONS},
    "numeric": {"tolerance": 1e-6},
    "judge": {"model": None, "rubric": None, "scale": 5},    # jobs.judge
}


@dataclass(frozen=True, slots=True, kw_only=True)
class LabelStats:
    """One label's scores; 0/0 is 0.0 (scikit-learn's ``zero_division=0``)."""

    precision: float
    recall: float
    f1: float
    support: int        #: rows whose expected answer is this label


@dataclass(frozen=True, slots=True, kw_only=True)
class Score:
    """The result of scoring a set of rows."""

    scorer: str
    value: float        #: the headline score in [0, 1]: macro-F1 for label, accuracy otherwise
    n: int              #: rows scored, error rows included
    correct: int
    errors: int         #: rows whose prediction is None (the model failed on them)
    accuracy: float     #: correct / n; 0.0 when n = 0
    macro_f1: float | None = None                         #: label scorer only
    per_label: dict[str, LabelStats] | None = None        #: label scorer only
    confusion: dict[str, dict[str, int]] | None = None    #: expected -> predicted -> count
    unparsed: int | None = None     #: judge scorer: replies that were not a grade (in errors)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form; every field is present, ``None`` where it does not apply."""
        return dataclasses.asdict(self)


@runtime_checkable
class Scorer(Protocol):
    """Scores ``(prediction or None for an error row, expected answer)`` pairs."""

    @property
    def name(self) -> str: ...

    def score(self, pairs: Iterable[tuple[str | None, str]]) -> Score: ...

    def correct(self, prediction: str | None, expected: str) -> bool:
        """Whether one row is right: the 0/1 row score that intervals and paired tests use."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Normalise:
    """Text normalisation before comparing; ``case_sensitive=False`` case-folds."""

    strip: bool = True
    case_sensitive: bool = False
    collapse_whitespace: bool = True    #: runs of whitespace become one space

    def __call__(self, text: str) -> str:
        if self.collapse_whitespace:
            text = re.sub(r"\s+", " ", text)
        if self.strip:
            text = text.strip()
        return text if self.case_sensitive else text.casefold()


def _ratio(a: int, b: int) -> float:
    return a / b if b else 0.0


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


class _PerRow:
    """A scorer that judges each row on its own; ``value`` is accuracy."""

    __slots__ = ()
    name: ClassVar[str]

    def _correct(self, prediction: str | None, expected: str) -> bool:
        raise NotImplementedError

    def correct(self, prediction: str | None, expected: str) -> bool:
        """Whether one row's prediction (None: an error row) is right."""
        return self._correct(prediction, expected)

    def score(self, pairs: Iterable[tuple[str | None, str]]) -> Score:
        n = right = errors = 0
        for prediction, expected in pairs:
            n += 1
            errors += prediction is None
            right += self._correct(prediction, expected)
        accuracy = _ratio(right, n)
        return Score(scorer=self.name, value=accuracy, n=n, correct=right, errors=errors,
                     accuracy=accuracy)


@dataclass(frozen=True, slots=True)
class LabelScorer:
    """Classification scores over the labels seen in the expected answers and predictions.

    Per-label stats cover the union of expected and predicted labels. Macro-F1 is the mean
    F1 over the labels in the expected answers, as scikit-learn's ``f1_score(average=
    "macro", labels=<true labels>)``: a label the model invents gets a `LabelStats` but no
    zero in the mean; its rows are still wrong and lower their true labels' recall. An error
    row lowers its true label's recall only. The confusion matrix has a row per expected
    label and a column per label, plus ``"<error>"`` when there are error rows; labels are
    sorted. With ``strip`` " positive" is "positive"; without ``case_sensitive`` labels are
    compared, and reported, case-folded.
    """

    strip: bool = True
    case_sensitive: bool = True
    name: ClassVar[str] = "label"

    def _label(self, text: str) -> str:
        text = text.strip() if self.strip else text
        return text if self.case_sensitive else text.casefold()

    def label(self, text: str) -> str:
        """A label as this scorer compares and reports it (stripped, case-folded)."""
        return self._label(text)

    def correct(self, prediction: str | None, expected: str) -> bool:
        """Whether one row's predicted label (None: an error row) is the expected one."""
        return prediction is not None and self._label(prediction) == self._label(expected)

    def score(self, pairs: Iterable[tuple[str | None, str]]) -> Score:
        cells: Counter[tuple[str, str | None]] = Counter(
            (self._label(e), None if p is None else self._label(p)) for p, e in pairs)
        support, predicted = Counter[str](), Counter[str]()
        for (e, p), count in cells.items():
            support[e] += count
            if p is not None:
                predicted[p] += count
        n, errors = support.total(), support.total() - predicted.total()
        correct = sum(cells[label, label] for label in support)
        per_label = {}
        for label in sorted(support.keys() | predicted.keys()):
            hits = cells[label, label]
            precision, recall = _ratio(hits, predicted[label]), _ratio(hits, support[label])
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            per_label[label] = LabelStats(precision=precision, recall=recall, f1=f1,
                                          support=support[label])
        macro_f1 = _mean([per_label[label].f1 for label in support])
        columns: list[str | None] = [*per_label, *([None] if errors else [])]
        confusion = {e: {ERROR_LABEL if p is None else p: cells[e, p] for p in columns}
                     for e in sorted(support)}
        return Score(scorer=self.name, value=macro_f1, n=n, correct=correct, errors=errors,
                     accuracy=_ratio(correct, n), macro_f1=macro_f1, per_label=per_label,
                     confusion=confusion)


@dataclass(frozen=True, slots=True)
class ExactScorer(_PerRow):
    """Correct when the prediction equals the expected answer after normalisation."""

    normalise: Normalise = Normalise()
    name: ClassVar[str] = "exact"

    def _correct(self, prediction: str | None, expected: str) -> bool:
        return prediction is not None and self.normalise(prediction) == self.normalise(expected)


@dataclass(frozen=True, slots=True)
class ContainsScorer(_PerRow):
    """Correct when the normalised expected answer occurs in the normalised prediction.

    An empty expected answer would be in every prediction, so it raises ValueError.
    """

    normalise: Normalise = Normalise()
    name: ClassVar[str] = "contains"

    def _correct(self, prediction: str | None, expected: str) -> bool:
        needle = self.normalise(expected)
        if not needle:
            raise ValueError(f"expected answer {expected!r} is empty after normalisation; "
                             "the contains scorer would count every prediction correct")
        return prediction is not None and needle in self.normalise(prediction)


@dataclass(frozen=True, slots=True)
class RegexScorer(_PerRow):
    """Correct when ``re.search(pattern, prediction)`` finds a match, where:

    - a literal ``{expected}`` in the pattern is replaced by the expected answer as an
      escaped literal, normalised: stripped with ``strip``, any run of whitespace matching
      any run with ``collapse_whitespace``, case-insensitive unless ``case_sensitive``;
    - a group named ``answer`` must also have matched, and equal the expected answer
      once both are normalised (in the first match).

    A pattern with neither ignores the expected answer: it checks the form of the output.
    """

    pattern: str
    normalise: Normalise = Normalise()
    name: ClassVar[str] = "regex"

    def _compile(self, expected: str) -> re.Pattern[str]:
        if "{expected}" not in self.pattern:
            return re.compile(self.pattern)
        text = expected.strip() if self.normalise.strip else expected
        if self.normalise.collapse_whitespace:
            literal = r"\s+".join(re.escape(part) for part in re.split(r"\s+", text))
        else:
            literal = re.escape(text)
        group = f"(?:{literal})" if self.normalise.case_sensitive else f"(?i:{literal})"
        return re.compile(self.pattern.replace("{expected}", group))

    def _correct(self, prediction: str | None, expected: str) -> bool:
        if prediction is None:
            return False
        pattern = self._compile(expected)
        match = pattern.search(prediction)
        if match is None or "answer" not in pattern.groupindex:
            return match is not None
        answer = match.group("answer")
        return answer is not None and self.normalise(answer) == self.normalise(expected)


_NUMBER = re.compile(r"""
    (?:(?<![\w.])[-−])? \$?                 # a sign that is not a hyphen, a dollar sign
    (?: [0-9]{1,3}(?:,[0-9]{3})+(?![0-9])   # 1,234,567
      | [0-9]+                              # 1234
      | (?<![0-9])(?=\.[0-9]) )             # .5
    (?:\.[0-9]+)?                           # decimals; a sentence's final "." is not one
""", re.VERBOSE)
_NOISE = str.maketrans({",": None, "$": None, "−": "-"})


def last_number(text: str) -> float | None:
    """The number a free-text answer ends with, or None when it has none.

    After a ``####`` marker (GSM8K's answer line) the first number after the last marker;
    otherwise the last number in the text. Understands a leading "-" or "$", thousands
    separators ("1,234") and decimals; a trailing "." or "%" is ignored.
    """
    after_marker = _NUMBER.findall(text.rpartition("####")[2])[:1] if "####" in text else []
    numbers = after_marker or _NUMBER.findall(text)[-1:]
    return float(numbers[0].translate(_NOISE)) if numbers else None


@dataclass(frozen=True, slots=True)
class NumericScorer(_PerRow):
    """Correct when the prediction's `last_number` is within ``tolerance`` (absolute) of the
    expected answer's. An expected answer with no number raises ValueError: a labelled
    dataset with a bad answer is rejected, not scored."""

    tolerance: float = 1e-6
    name: ClassVar[str] = "numeric"

    def _correct(self, prediction: str | None, expected: str) -> bool:
        want = last_number(expected)
        if want is None:
            raise ValueError(f"expected answer {expected!r} has no number")
        got = None if prediction is None else last_number(prediction)
        return got is not None and abs(got - want) <= self.tolerance


def make_scorer(name: str, options: Mapping[str, object] | None = None) -> Scorer:
    """The scorer called ``name`` with ``options``; ValueError names an unknown scorer or
    option, a value of the wrong type, a missing or invalid ``pattern``."""
    if name not in OPTIONS:
        raise ValueError(f"unknown scorer {name!r}; use one of {', '.join(SCORERS)}")
    if name == "judge":
        return _judge(options or {})
    values = _check_options(name, options or {})
    if name == "label":
        return LabelScorer(bool(values["strip"]), bool(values["case_sensitive"]))
    if name == "numeric":
        return NumericScorer(float(cast(float, values["tolerance"])))
    normalise = Normalise(strip=bool(values["strip"]),
                          case_sensitive=bool(values["case_sensitive"]),
                          collapse_whitespace=bool(values["collapse_whitespace"]))
    if name == "exact":
        return ExactScorer(normalise)
    if name == "contains":
        return ContainsScorer(normalise)
    return RegexScorer(str(values["pattern"]), normalise)


def _judge(options: Mapping[str, object]) -> Scorer:
    from jobs.judge import JudgeScorer, check_options

    unknown = sorted(set(options) - set(OPTIONS["judge"]))
    if unknown:
        raise ValueError(f"scorer 'judge' has no option {unknown[0]!r}; "
                         f"options: {', '.join(OPTIONS['judge'])}")
    problem = check_options(options)
    if problem:
        raise ValueError(f"scorer 'judge' {problem}")
    return JudgeScorer(str(options["model"]), str(options["rubric"]),
                       int(cast(int, options.get("scale", 5))))


def _check_options(name: str, options: Mapping[str, object]) -> dict[str, object]:
    known = OPTIONS[name]
    for key in options:
        if key not in known:
            raise ValueError(f"scorer {name!r} has no option {key!r}; "
                             f"options: {', '.join(known)}")
    values = {**known, **options}
    for key, value in values.items():
        problem = _option_problem(key, value)
        if problem:
            raise ValueError(f"scorer {name!r} option {key!r} {problem}")
    return values


def _option_problem(key: str, value: object) -> str | None:
    """Why ``value`` is not valid for option ``key``, or None when it is."""
    if key == "pattern":
        if value is None:
            return "is required: a regular expression, with {expected} or a group named answer"
        if not isinstance(value, str):
            return f"must be a string, got {value!r}"
        try:
            re.compile(value.replace("{expected}", "x"))
        except re.error as exc:
            return f"is not a valid regular expression: {exc} in {value!r}"
        return None
    if key == "tolerance":
        ok = (isinstance(value, int | float) and not isinstance(value, bool)
              and math.isfinite(value) and value >= 0)
        return None if ok else f"must be a non-negative number, got {value!r}"
    return None if isinstance(value, bool) else f"must be true or false, got {value!r}"
