"""Scorers: hand-worked answers for every scorer, and errors that name the bad value."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from fractions import Fraction as F

import pytest

from jobs.scorers import SCORERS, LabelStats, Score, Scorer, last_number, make_scorer


def score(name: str, pairs: Iterable[tuple[str | None, str]], **options: object) -> Score:
    return make_scorer(name, options).score(pairs)


def stats(p: F | float, r: F | float, f1: F | float, support: int) -> LabelStats:
    return LabelStats(precision=pytest.approx(float(p)), recall=pytest.approx(float(r)),
                      f1=pytest.approx(float(f1)), support=support)


# --- label ---------------------------------------------------------------------------------

def test_label_scores_a_three_class_confusion_matrix_worked_by_hand():
    # expected -> predicted:      cat  dog  bird     support
    #   cat                        2    1    1         4
    #   dog                        1    2    0         3
    #   bird                       0    1    1         2
    # predicted totals             3    4    2         n = 9, correct = 2+2+1 = 5
    # cat:  P = 2/3, R = 2/4, F1 = 2·(2/3)(1/2) / (2/3 + 1/2) = (2/3) / (7/6) = 4/7
    # dog:  P = 2/4, R = 2/3, F1 = 4/7 (same product and sum)
    # bird: P = 1/2, R = 1/2, F1 = 1/2
    # macro-F1 = (4/7 + 4/7 + 1/2) / 3 = (16/14 + 7/14) / 3 = 23/42
    rows = [("cat", "cat"), ("cat", "cat"), ("dog", "cat"), ("bird", "cat"),
            ("dog", "dog"), ("dog", "dog"), ("cat", "dog"),
            ("bird", "bird"), ("dog", "bird")]
    result = score("label", rows)
    assert (result.n, result.correct, result.errors) == (9, 5, 0)
    assert result.accuracy == pytest.approx(5 / 9)
    assert result.confusion == {"bird": {"bird": 1, "cat": 0, "dog": 1},
                                "cat": {"bird": 1, "cat": 2, "dog": 1},
                                "dog": {"bird": 0, "cat": 1, "dog": 2}}
    assert result.per_label == {"bird": stats(F(1, 2), F(1, 2), F(1, 2), 2),
                                "cat": stats(F(2, 3), F(1, 2), F(4, 7), 4),
                                "dog": stats(F(1, 2), F(2, 3), F(4, 7), 3)}
    assert result.macro_f1 == pytest.approx(23 / 42)
    assert result.value == result.macro_f1
    assert list(result.per_label) == ["bird", "cat", "dog"]


def test_a_label_never_predicted_scores_zero_precision_recall_and_f1():
    # a: P = 1/2 (predicted twice, right once), R = 1/1, F1 = 2·(1/2)·1 / (3/2) = 2/3
    # b: P = 1, R = 1, F1 = 1
    # c: never predicted: P = 0/0 -> 0, R = 0/1 = 0, F1 = 0
    # macro-F1 = (2/3 + 1 + 0) / 3 = 5/9
    result = score("label", [("a", "a"), ("b", "b"), ("a", "c")])
    assert result.per_label is not None
    assert result.per_label["c"] == LabelStats(precision=0.0, recall=0.0, f1=0.0, support=1)
    assert result.per_label["a"] == stats(F(1, 2), 1, F(2, 3), 1)
    assert result.macro_f1 == pytest.approx(5 / 9)


def test_a_predicted_label_outside_the_expected_set_is_reported_but_not_averaged():
    # yes: P = 1/1, R = 1/2, F1 = 2·1·(1/2) / (3/2) = 2/3;  no: P = R = F1 = 1
    # maybe: P = 0/1 = 0, support 0 so R = 0, F1 = 0
    # macro-F1 over the expected labels {no, yes} = (2/3 + 1) / 2 = 5/6
    # (averaging maybe too would give (2/3 + 1 + 0) / 3 = 5/9)
    result = score("label", [("yes", "yes"), ("maybe", "yes"), ("no", "no"), ("no", "no")])
    assert result.per_label is not None
    assert result.per_label["maybe"] == LabelStats(precision=0.0, recall=0.0, f1=0.0,
                                                   support=0)
    assert result.per_label["yes"] == stats(1, F(1, 2), F(2, 3), 2)
    assert result.macro_f1 == pytest.approx(5 / 6)
    assert result.confusion == {"no": {"maybe": 0, "no": 2, "yes": 0},
                                "yes": {"maybe": 1, "no": 0, "yes": 1}}
    assert result.accuracy == pytest.approx(3 / 4)


def test_error_rows_count_wrong_and_appear_under_error_in_the_confusion_matrix():
    # pos: one error row, one right -> P = 1/1, R = 1/2, F1 = 2/3;  neg: P = R = F1 = 1
    # macro-F1 = (2/3 + 1) / 2 = 5/6; accuracy = 2/3
    result = score("label", [(None, "pos"), ("pos", "pos"), ("neg", "neg")])
    assert (result.n, result.correct, result.errors) == (3, 2, 1)
    assert result.accuracy == pytest.approx(2 / 3)
    assert result.confusion == {"neg": {"neg": 1, "pos": 0, "<error>": 0},
                                "pos": {"neg": 0, "pos": 1, "<error>": 1}}
    assert result.per_label is not None and "<error>" not in result.per_label
    assert result.per_label["pos"] == stats(1, F(1, 2), F(2, 3), 2)
    assert result.macro_f1 == pytest.approx(5 / 6)


def test_a_prediction_spelled_like_the_error_column_is_not_an_error_row():
    result = score("label", [("<error>", "a")])
    assert (result.errors, result.correct) == (0, 0)
    assert result.confusion == {"a": {"<error>": 1, "a": 0}}


def test_label_strips_whitespace_by_default_and_is_case_sensitive_unless_told():
    rows = [(" positive", "positive"), ("Negative\n", "negative")]
    assert score("label", rows).correct == 1                         # "Negative" != "negative"
    folded = score("label", rows, case_sensitive=False)
    assert folded.correct == 2 and folded.per_label is not None
    assert list(folded.per_label) == ["negative", "positive"]
    assert score("label", rows, strip=False).correct == 0            # " positive" != "positive"


def test_no_rows_score_zero_everywhere():
    empty = score("label", [])
    assert (empty.n, empty.value, empty.accuracy, empty.macro_f1) == (0, 0.0, 0.0, 0.0)
    assert empty.per_label == {} and empty.confusion == {}
    assert (score("exact", []).n, score("exact", []).value) == (0, 0.0)


# --- exact, contains -----------------------------------------------------------------------

def test_exact_normalises_whitespace_and_case_by_default():
    rows = [("  The  Answer\n", "the answer")]
    assert score("exact", rows).correct == 1
    assert score("exact", rows, case_sensitive=True).correct == 0
    assert score("exact", rows, collapse_whitespace=False).correct == 0   # two spaces
    assert score("exact", [(" x", "x")], strip=False).correct == 0        # leading space kept


def test_exact_counts_error_rows_wrong_and_reports_accuracy_as_its_value():
    result = score("exact", [(None, "a"), ("a", "a"), ("b", "a"), ("A", "a")])
    assert (result.n, result.correct, result.errors) == (4, 2, 1)
    assert result.value == result.accuracy == 0.5
    assert result.per_label is None and result.confusion is None and result.macro_f1 is None


def test_contains_finds_the_expected_answer_inside_the_prediction():
    rows = [("I think the capital is Paris.", "paris"),
                                          ("It is Lyon.", "paris"), (None, "paris")]
    result = score("contains", rows)
    assert (result.correct, result.errors) == (1, 1)
    assert score("contains", rows[:1], case_sensitive=True).correct == 0


def test_contains_rejects_an_empty_expected_answer():
    with pytest.raises(ValueError, match="expected answer ' ' is empty"):
        score("contains", [("anything", " ")])


# --- regex ---------------------------------------------------------------------------------

def test_regex_with_expected_placeholder_matches_the_escaped_normalised_answer():
    pattern = r"^Answer:\s*{expected}\b"
    rows = [
        ("Answer: New  York City", "new york"),   # case-folded, whitespace runs collapse
        ("Answer: Newark", "new york"),           # wrong answer
        ("Answer: 3x5", "3.5"),                   # "." is escaped, not any character
        ("Answer: 3.5", "3.5"),
    ]
    result = score("regex", rows, pattern=pattern)
    assert result.correct == 2
    assert score("regex", rows[:1], pattern=pattern, case_sensitive=True).correct == 0


def test_regex_answer_group_must_equal_the_expected_answer():
    pattern = r"answer is \(?(?P<answer>\w+)"
    rows = [("The answer is (B).", "b"), ("The answer is C", "b"),
                                          ("I don't know", "b"), (None, "b")]
    result = score("regex", rows, pattern=pattern)
    assert (result.correct, result.errors) == (1, 1)


def test_regex_answer_group_that_did_not_take_part_in_the_match_is_wrong():
    result = score("regex", [("no answer", "b")], pattern=r"(?:answer is (?P<answer>\w))?")
    assert result.correct == 0


def test_regex_without_placeholder_or_answer_group_checks_only_the_form():
    result = score("regex", [('{"a": 1}', "ignored"), ("a: 1", "ignored")],
                   pattern=r"^\{.*\}$")
    assert result.correct == 1


# --- numeric -------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "number"), [
    ("The answer is 1,234.", 1234.0),
    ("48/2 = 24 clips in May\n#### 72", 72.0),
    ("#### 72\nThat took 3 steps.", 72.0),         # the #### line wins over the last number
    ("It fell by -3.5 degrees", -3.5),
    ("She paid $18", 18.0),
    ("She lost -$18", -18.0),
    ("a 50% rise", 50.0),
    ("from 2-3 hours", 3.0),                       # a hyphen is not a minus sign
    ("about .5 of it", 0.5),
    ("1,234,567.89 total", 1234567.89),
    ("no number here", None),
])
def test_last_number_reads_gsm8k_style_answers(text, number):
    assert last_number(text) == number


def test_numeric_compares_the_last_numbers_of_prediction_and_expected_answer():
    gsm8k = ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
             "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72")
    rows = [
        ("The answer is 1,234.", "1234"), ("So she had 72 clips.", gsm8k),
        ("-3.5 degrees", "-3.5"), ("$18", "18"),
        ("no number here", "5"), (None, "5"),       # both wrong
    ]
    result = score("numeric", rows)
    assert (result.n, result.correct, result.errors) == (6, 4, 1)


def test_numeric_tolerance_is_absolute_and_defaults_to_one_in_a_million():
    # |0.3333333 - 0.333333333| = 3.3e-8 <= 1e-6;  |0.333 - 0.333333333| = 3.3e-4 > 1e-6
    rows = [("0.3333333", "0.333333333"), ("0.333", "0.333333333")]
    assert score("numeric", rows).correct == 1
    assert score("numeric", rows, tolerance=0.01).correct == 2
    assert score("numeric", [("19", "18")], tolerance=1).correct == 1


def test_numeric_rejects_an_expected_answer_with_no_number():
    with pytest.raises(ValueError, match="expected answer 'seven' has no number"):
        score("numeric", [(None, "seven")])


# --- construction --------------------------------------------------------------------------

REQUIRED: dict[str, dict[str, object]] = {
    "regex": {"pattern": "x"}, "judge": {"model": "judge", "rubric": "Grade: {answer}"}}


def test_every_scorer_is_built_by_its_name_and_satisfies_the_protocol():
    for name in SCORERS:
        scorer = make_scorer(name, REQUIRED.get(name))
        assert isinstance(scorer, Scorer) and scorer.name == name


def test_an_unknown_scorer_is_named_with_the_valid_ones():
    message = "unknown scorer 'f1'; use one of label, exact, contains, regex, numeric, judge"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        make_scorer("f1")


def test_an_unknown_option_is_named_with_the_scorers_options():
    message = ("scorer 'exact' has no option 'pattern'; "
               "options: strip, case_sensitive, collapse_whitespace")
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        make_scorer("exact", {"pattern": "x"})


@pytest.mark.parametrize(("name", "options", "message"), [
    ("regex", {"pattern": "(unclosed"}, "option 'pattern' is not a valid regular expression: "
                                        "missing ), unterminated subpattern at position 0 "
                                        "in '(unclosed'"),
    ("regex", {}, "option 'pattern' is required"),
    ("regex", {"pattern": 3}, "option 'pattern' must be a string, got 3"),
    ("exact", {"strip": "yes"}, "option 'strip' must be true or false, got 'yes'"),
    ("numeric", {"tolerance": -1}, "option 'tolerance' must be a non-negative number, got -1"),
    ("numeric", {"tolerance": True}, "option 'tolerance' must be a non-negative number"),
])
def test_bad_option_values_are_rejected_naming_the_option(name, options, message):
    with pytest.raises(ValueError, match=f"^{re.escape(f'scorer {name!r} {message}')}"):
        make_scorer(name, options)


def test_to_dict_is_json_serialisable_and_keeps_nested_stats():
    result = score("label", [("a", "a"), (None, "b")])
    data = json.loads(json.dumps(result.to_dict()))
    assert data["scorer"] == "label" and data["n"] == 2 and data["errors"] == 1
    assert data["per_label"]["a"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert data["confusion"]["b"] == {"a": 0, "b": 0, "<error>": 1}
    plain = json.loads(json.dumps(score("exact", [("a", "a")]).to_dict()))
    assert plain["value"] == 1.0 and plain["per_label"] is None


# --- judge ---------------------------------------------------------------------------------

JUDGE = {"model": "judge-7b@llama_cpp", "rubric": "Q: {prompt}\nA: {answer}\nRef: {expected}\n"
         "Grade 1-5 {not a placeholder}:", "scale": 5}


@pytest.mark.parametrize(("reply", "grade"), [
    ("4", 4), (" 5\n", 5), ("1", 1), ("0", None), ("6", None), ("4/5", None),
    ("Score: 4", None), ("four", None), ("4.0", None), ("", None), (None, None), ("-3", None),
])
def test_a_judge_reply_is_a_grade_only_when_it_is_exactly_an_integer_in_range(reply, grade):
    from jobs.judge import parse_grade

    assert parse_grade(reply, 5) == grade


def test_judge_scores_are_graded_and_a_reply_that_does_not_parse_is_a_counted_error():
    scorer = make_scorer("judge", JUDGE)
    # grades 5, 3, 1 score 1.0, 0.5, 0.0; "great" did not parse; None: a model failed
    result = scorer.score([("5", "a"), ("3", "b"), ("1", "c"), ("great", "d"), (None, "e")])
    assert result.value == pytest.approx(1.5 / 5) and result.accuracy == result.value
    assert (result.n, result.correct, result.errors, result.unparsed) == (5, 1, 2, 1)


def test_the_rubric_is_filled_in_and_other_braces_are_left_alone():
    from jobs.judge import render

    text = render(str(JUDGE["rubric"]), prompt="2+2?", answer="4", expected="four")
    assert text == "Q: 2+2?\nA: 4\nRef: four\nGrade 1-5 {not a placeholder}:"


@pytest.mark.parametrize(("options", "message"), [
    ({"rubric": "{answer}"}, "option 'model' is required"),
    ({"model": "judge", "rubric": "no answer here"}, "with {answer}"),
    ({"model": "judge", "rubric": "{answer}", "scale": 1}, "from 2 to 100, got 1"),
    ({"model": "judge", "rubric": "{answer}", "scale": True}, "got True"),
    ({"model": "bad id!", "rubric": "{answer}"}, "got 'bad id!'"),
    ({"model": "judge", "rubric": "{answer}", "temperature": 0}, "no option 'temperature'"),
])
def test_bad_judge_options_are_named(options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make_scorer("judge", options)
